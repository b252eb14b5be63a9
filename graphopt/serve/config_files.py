"""TF Serving's text-format configuration files (batching parameters, model config): reading one
into its proto message, each refusal one line naming the file, the field and the fix."""

from google.protobuf import text_format

from graphopt.errors import GraphoptError


class ConfigFileError(GraphoptError):
    """A batching parameters or model config file that cannot be used (exit 2 at start-up)."""


def parse_text_file(path, flag, message, example):
    """Parse the text-format file ``path`` (given as ``flag``) into the empty proto ``message``;
    ``example`` is a line of the format quoted in the fix."""
    name = message.DESCRIPTOR.name
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigFileError(
            f"{flag} {path}: cannot read it ({exc.strerror}); pass a readable file"
        ) from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{flag} {path}: not UTF-8 text; write {name} in text format") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigFileError(
            f"{flag} {path}: {exc}; write TF Serving's {name} text format, e.g. {example}"
        ) from None
    return message
