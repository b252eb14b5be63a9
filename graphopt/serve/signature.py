"""One serving signature of a loaded SavedModel: checks request tensors against it and runs it.

The request path calls the signature's concrete function through its flat call: the input
tensors in the function's own (flattened) order plus its captured resources, without the
per-call binding, casting and conversion of a keyword call (``canonicalize_function_inputs``,
several times the model's own compute for a one-example request of the course's 17 inputs). The
arrays are checked against the signature first, so the flat call sees exactly the dtypes and
shapes a keyword call would have converted them to: the same graph runs on the same tensors and
the answers are bit-identical (tests/serve/test_serve_fast_path.py).
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.python.eager import context
from tensorflow.python.framework import ops

from graphopt.serve.errors import BadRequest, ModelFailed

DEFAULT_SIGNATURE = "serving_default"


def dtype_name(dtype):
    """TF Serving's spelling of a dtype in messages and metadata, e.g. DT_INT64."""
    return types_pb2.DataType.Name(tf.dtypes.as_dtype(dtype).as_datatype_enum)


def shape_text(shape):
    """A shape as a client reads it: [?, 3] for an unknown batch of rows of 3."""
    if shape.rank is None:
        return "any shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


class PredictSignature:
    """A signature's input and output specs plus the concrete function that computes it.

    Calls are safe from many threads at once: a concrete function holds no per-call Python
    state, and TensorFlow runs concurrent calls of one function independently.
    """

    def __init__(self, name, function):
        self.name = name
        self._function = function
        # The version's ApplyGate (serve/deltas.py), set by the repository: a call runs between
        # two deltas, never while one is half applied.
        self.gate = None
        _, kwargs = function.structured_input_signature
        self.inputs = dict(sorted(kwargs.items()))
        self.outputs = {
            key: tf.TensorSpec(value.shape, value.dtype)
            for key, value in sorted(function.structured_outputs.items())
        }
        # Inputs that all lead with an unknown dimension share the batch dimension: recommendation
        # signatures concatenate them, so differing row counts are a client mistake worth naming.
        self._batched = bool(self.inputs) and all(
            spec.shape.rank and spec.shape[0] is None for spec in self.inputs.values()
        )
        # The flat call's input order: the structured signature flattened (a dict sorts by key).
        self._flat_names = tf.nest.flatten(((), {key: key for key in kwargs}))
        self._flat = len(self._flat_names) == len(function.inputs) - len(function.captured_inputs)
        # Each input's numpy dtype and dims (None: any shape; a None dim: any size), read once:
        # TensorShape's compatibility check costs more per call than the one-example model itself.
        self._array_specs = [
            (
                key,
                np.dtype(spec.dtype.as_numpy_dtype),
                None if spec.shape.rank is None else tuple(spec.shape.as_list()),
            )
            for key, spec in self.inputs.items()
        ]

    @property
    def batched(self):
        """Whether every input leads with the (unknown) batch dimension: requests can be merged."""
        return self._batched

    def check_names(self, names):
        """Raise BadRequest unless ``names`` are exactly this signature's inputs."""
        unknown = sorted(set(names) - set(self.inputs))
        if unknown:
            raise BadRequest(
                f"unknown input {unknown[0]!r} for signature {self.name!r}; "
                f"its inputs are: {', '.join(self.inputs)}"
            )
        missing = [key for key in self.inputs if key not in names]
        if missing:
            raise BadRequest(
                f"missing input {missing[0]!r} for signature {self.name!r}; "
                f"send all of: {', '.join(self.inputs)}"
            )

    def check(self, arrays):
        """Raise BadRequest unless ``arrays`` names exactly this signature's inputs, dtypes and shapes."""
        self.check_names(arrays)
        for key, dtype, dims in self._array_specs:
            array = arrays[key]
            if array.dtype != dtype:
                raise BadRequest(
                    f"input {key!r} has dtype {dtype_name(array.dtype)}, "
                    f"the signature expects {dtype_name(self.inputs[key].dtype)}"
                )
            if dims is not None and not _fits(dims, array.shape):
                raise BadRequest(
                    f"input {key!r} has shape {list(array.shape)}, "
                    f"the signature expects {shape_text(self.inputs[key].shape)}"
                )
        if self._batched:
            rows = {key: array.shape[0] for key, array in arrays.items()}
            if len(set(rows.values())) > 1:
                detail = ", ".join(f"{key} has {n}" for key, n in rows.items())
                raise BadRequest(
                    f"inputs have different batch sizes ({detail} rows); "
                    "every input needs one row per example"
                )

    def check_outputs(self, output_filter):
        """BadRequest unless every name in ``output_filter`` is an output of this signature."""
        unknown = sorted(set(output_filter) - set(self.outputs))
        if unknown:
            raise BadRequest(
                f"unknown output {unknown[0]!r} in output_filter; the outputs are: {', '.join(self.outputs)}"
            )

    def run(self, arrays, output_filter=()):
        """Check ``arrays`` and return the outputs (all, or those named in output_filter) as numpy arrays."""
        self.check(arrays)
        self.check_outputs(output_filter)
        result = self.compute(arrays)
        return {key: result[key] for key in sorted(output_filter or self.outputs)}

    def compute(self, arrays):
        """Every output for ``arrays`` (already checked), as numpy arrays; BadRequest or ModelFailed."""
        try:
            result = self.call(arrays)
        except tf.errors.InvalidArgumentError as exc:
            # e.g. an id beyond a static table's rows: the request, not the server, is at fault
            raise BadRequest(f"the model rejected the input: {_first_line(exc.message)}") from None
        except tf.errors.OpError as exc:
            raise ModelFailed(f"the model failed: {_first_line(exc.message)}") from None
        return {key: value.numpy() for key, value in result.items()}

    def call(self, arrays):
        """The function's outputs (tensors) for checked ``arrays``: one tensor per input, built once,
        and the flat call (a keyword call where the signature's structure has no flat form)."""
        if self.gate is None:
            return self._call(arrays)
        with self.gate.request():
            return self._call(arrays)

    def _call(self, arrays):
        device = context.context().device_name
        if not self._flat:
            return self._function(**{key: ops.EagerTensor(a, device, None) for key, a in arrays.items()})
        tensors = [ops.EagerTensor(arrays[key], device, None) for key in self._flat_names]
        return self._function._call_flat(tensors, self._function.captured_inputs)

    def example_arrays(self, rows=1):
        """Inputs of ``rows`` examples filled with zeros (empty strings, False): a warm-up or demo request."""
        arrays = {}
        for key, spec in self.inputs.items():
            dims = spec.shape.as_list() if spec.shape.rank is not None else [None]
            shape = [rows if i == 0 and d is None else (1 if d is None else d) for i, d in enumerate(dims)]
            if spec.dtype == tf.string:
                arrays[key] = np.full(shape, b"", dtype=object)
            else:
                arrays[key] = np.zeros(shape, dtype=spec.dtype.as_numpy_dtype)
        return arrays


def _fits(dims, shape):
    """Whether ``shape`` (an array's) matches ``dims`` (a spec's, None for any size)."""
    return len(dims) == len(shape) and all(d is None or d == n for d, n in zip(dims, shape, strict=True))


def _first_line(message):
    return message.strip().splitlines()[0] if message.strip() else "no message"
