"""TF Serving's REST JSON mapping: request bodies to input arrays, output arrays to replies.

Row format (``instances``) lists one entry per example; columnar format (``inputs``) gives each
input whole. Replies mirror the request: ``predictions`` for rows, ``outputs`` for columns, and
a signature with a single output drops its name in both (as TF Serving does).
"""

import base64
import json
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from graphopt.serve.errors import BadRequest
from graphopt.serve.limits import ElementBudget, check_json_depth
from graphopt.serve.signature import DEFAULT_SIGNATURE, dtype_name, shape_text


@dataclass
class PredictBody:
    """A parsed predict body: which signature, which format, and the raw JSON payload."""

    signature_name: str
    row_format: bool
    payload: object


def parse_predict_body(body):
    """Parse the bytes of a predict request; BadRequest says what is malformed."""
    check_json_depth(body)
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text; send JSON") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON in the request body: {exc}") from None
    except RecursionError:  # not expected after the depth check; never a dropped connection
        raise BadRequest("the JSON body nests too deeply; flatten it") from None
    if not isinstance(document, dict):
        raise BadRequest('the request body must be a JSON object like {"instances": [...]}')
    signature_name = document.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str):
        raise BadRequest("signature_name must be a string")
    has_rows, has_columns = "instances" in document, "inputs" in document
    if has_rows == has_columns:
        raise BadRequest(
            'the request needs exactly one of "instances" (row format) or "inputs" (columnar format)'
        )
    payload = document["instances" if has_rows else "inputs"]
    return PredictBody(signature_name or DEFAULT_SIGNATURE, has_rows, payload)


def decode_inputs(body, signature, max_elements):
    """The input arrays of a parsed predict body, converted to the signature's dtypes.

    Each input's elements are counted against ``max_elements`` (for the whole request) before
    its array is built.
    """
    names = list(signature.inputs)
    budget = ElementBudget(max_elements)
    if body.row_format:
        return _decode_rows(body.payload, signature, names, budget)
    payload = body.payload
    if isinstance(payload, dict) and not _is_b64(payload):
        return {
            key: _to_array(key, value, signature.inputs.get(key), budget) for key, value in payload.items()
        }
    if len(names) != 1:
        raise BadRequest(
            f"signature {signature.name!r} has {len(names)} inputs ({', '.join(names)}); "
            '"inputs" must be an object keyed by input name'
        )
    return {names[0]: _to_array(names[0], payload, signature.inputs[names[0]], budget)}


def _decode_rows(instances, signature, names, budget):
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances" must be a non-empty list with one entry per example')
    named = [isinstance(item, dict) and not _is_b64(item) for item in instances]
    if all(named):
        keys = set()
        for item in instances:
            keys.update(item)
        arrays = {}
        for key in sorted(keys):
            for index, item in enumerate(instances):
                if key not in item:
                    raise BadRequest(
                        f"instance {index} lacks input {key!r}; every instance needs every input"
                    )
            arrays[key] = _to_array(key, [item[key] for item in instances], signature.inputs.get(key), budget)
        return arrays
    if any(named):
        raise BadRequest('"instances" mixes objects and plain values; use one form for all examples')
    if len(names) != 1:
        raise BadRequest(
            f"signature {signature.name!r} has {len(names)} inputs ({', '.join(names)}); "
            "send each instance as an object keyed by input name"
        )
    return {names[0]: _to_array(names[0], instances, signature.inputs[names[0]], budget)}


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _to_array(name, value, spec, budget):
    if spec is None:
        # an unknown name: leave the message to the signature check, which lists the real inputs
        return np.zeros(0)
    if spec.dtype == tf.string:
        return _string_array(name, value, budget)
    shape = _leading_shape(value)
    budget.claim(name, math.prod(shape), shape)
    if spec.shape.rank is not None and len(shape) != spec.shape.rank:
        raise BadRequest(f"input {name!r} has shape {shape}, the signature expects {shape_text(spec.shape)}")
    try:
        array = np.asarray(value)
    except ValueError:
        raise BadRequest(
            f"input {name!r} is not a rectangular array: nested lists must have equal lengths"
        ) from None
    target = np.dtype(spec.dtype.as_numpy_dtype)
    if array.size == 0:
        return array.astype(target)
    kind = array.dtype.kind
    if spec.dtype.is_bool:
        accepted = kind == "b"
    elif spec.dtype.is_integer:
        accepted = kind in "iu"
    elif spec.dtype.is_floating:
        accepted = kind in "iuf"
    else:
        raise BadRequest(
            f"input {name!r} has dtype {dtype_name(spec.dtype)}, which the REST API does not carry"
        )
    if not accepted:
        wanted = {"b": "true/false", "i": "whole numbers", "f": "numbers"}
        key = "b" if spec.dtype.is_bool else "i" if spec.dtype.is_integer else "f"
        raise BadRequest(
            f"input {name!r} expects {dtype_name(spec.dtype)} ({wanted[key]}), got {_json_kind(array)}"
        )
    if spec.dtype.is_integer:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(f"input {name!r} has values outside the range of {dtype_name(spec.dtype)}")
    return array.astype(target, copy=False)


def _json_kind(array):
    kinds = {
        "b": "true/false",
        "i": "whole numbers",
        "u": "whole numbers",
        "f": "fractional numbers",
        "U": "strings",
        "O": "mixed or out-of-range values",
    }
    return kinds.get(array.dtype.kind, f"values of numpy kind {array.dtype.kind!r}")


def _leading_shape(value):
    """The shape nested lists have if they are rectangular, read along their first entries."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _string_array(name, value, budget):
    """Strings (UTF-8) and {"b64": ...} objects to an object array of bytes, checking it is rectangular."""
    shape = _nested_shape(name, value)
    budget.claim(name, math.prod(shape), shape)
    flat = []
    _flatten_strings(name, value, flat)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _nested_shape(name, value):
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = {_nested_shape(name, item) for item in value}
    if len(inner) != 1:
        raise BadRequest(f"input {name!r} is not a rectangular array: nested lists must have equal lengths")
    return (len(value),) + inner.pop()


def _flatten_strings(name, value, out):
    if isinstance(value, list):
        for item in value:
            _flatten_strings(name, item, out)
    elif isinstance(value, str):
        try:
            out.append(value.encode("utf-8"))
        except UnicodeEncodeError:  # JSON's "\ud800" escape decodes to a lone surrogate
            raise BadRequest(
                f"input {name!r} holds a string that is not valid Unicode (a lone surrogate such as "
                '"\\ud800"); send UTF-8 text, or bytes as {"b64": ...}'
            ) from None
    elif _is_b64(value) and isinstance(value["b64"], str):
        try:
            out.append(base64.b64decode(value["b64"], validate=True))
        except ValueError:  # binascii.Error, and non-ASCII text
            raise BadRequest(f"input {name!r} has a b64 value that is not valid base64") from None
    else:
        raise BadRequest(
            f'input {name!r} expects DT_STRING (strings or {{"b64": ...}}), got {type(value).__name__} values'
        )


def encode_outputs(outputs, row_format):
    """The JSON reply for ``outputs`` (name -> array): {"predictions": ...} or {"outputs": ...}."""
    values = {key: _to_json(key, array) for key, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    for key, array in outputs.items():
        if array.ndim == 0:
            raise BadRequest(
                f'output {key!r} is a scalar, not one row per example; use the columnar "inputs" format'
            )
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    rows = {len(value) for value in values.values()}
    if len(rows) != 1:
        raise BadRequest(
            "the outputs have different batch sizes, which the row format cannot pair up; "
            'use the columnar "inputs" format'
        )
    count = rows.pop()
    return {"predictions": [{key: value[i] for key, value in values.items()} for i in range(count)]}


def _to_json(name, array):
    if array.dtype != object:
        return array.tolist()
    binary = name.endswith("_bytes")
    flat = [_string_to_json(item, binary) for item in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]


def _string_to_json(item, binary):
    if not binary:
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(item).decode("ascii")}
