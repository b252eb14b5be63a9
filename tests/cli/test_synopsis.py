"""The README's Command line synopsis names every option each command really has, and no other."""

import os
import re

import click

from graphopt.cli import main
from tests.conftest import REPO


def readme_synopsis():
    """command -> the option names its synopsis lines (continuation lines included) mention."""
    text = open(os.path.join(REPO, "README.md")).read()
    section = text[text.index("## Command line") :]
    block = section[section.index("```\n") + 4 :]
    synopsis, command = {}, None
    for line in block[: block.index("```")].splitlines():
        words = line.split()
        if words[:1] == ["graphopt"] and not words[1].startswith("-"):
            command, words = words[1], words[2:]
            synopsis[command] = set()
        if command:
            synopsis[command] |= set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", " ".join(words)))
    return synopsis


def test_readme_synopsis_matches_every_commands_options():
    synopsis = readme_synopsis()
    assert set(synopsis) == set(main.commands)
    for name, command in main.commands.items():
        options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
        missing = [p.opts[-1] for p in options if not set(p.opts) & synopsis[name]]
        unknown = synopsis[name] - {o for p in options for o in p.opts}
        assert not missing and not unknown, f"README synopsis of {name}: missing {missing}, unknown {unknown}"


def test_readme_commands_never_write_into_the_repositorys_packages():
    """`models/` is the package graphopt.course.models: an example writing there would pollute it."""
    text = open(os.path.join(REPO, "README.md")).read()
    writes = re.findall(r"graphopt (?:build-model|rewrite \S+ -o) (\S+)", text)
    assert writes and not [w for w in writes if w.split("/")[0] in ("models", "graphopt", "tests")], writes
