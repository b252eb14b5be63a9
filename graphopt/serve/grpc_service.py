"""TF Serving's gRPC services (PredictionService, ModelService) on the official protos."""

import functools
import math
import socket
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from graphopt.errors import GraphoptError
from graphopt.serve.errors import BadRequest, RequestError
from graphopt.serve.limits import DEFAULT_MAX_REQUEST_ELEMENTS, ElementBudget
from graphopt.serve.predict import Predictor
from graphopt.serve.signature import dtype_name

DEFAULT_WORKERS = 32


def _answers_request_errors(method):
    """Turn a RequestError into the matching gRPC status with its message."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except RequestError as exc:
            context.abort(exc.grpc_code, str(exc))

    return wrapper


def _servable(models, model_spec):
    """(repository, servable) a ModelSpec asks for: by version, by version_label, or the newest."""
    repository = models.repository(model_spec.name)
    if model_spec.version_label:
        if model_spec.HasField("version"):
            raise BadRequest("model_spec sets both version and version_label; set one")
        return repository, repository.get(label=model_spec.version_label)
    return repository, repository.get(model_spec.version.value if model_spec.HasField("version") else None)


# Where a TensorProto keeps its values for each dtype a request can carry, and how many numbers
# make one element (complex numbers are stored as pairs).
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", 1),
    types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_INT32: ("int_val", 1),
    types_pb2.DT_INT16: ("int_val", 1),
    types_pb2.DT_INT8: ("int_val", 1),
    types_pb2.DT_UINT8: ("int_val", 1),
    types_pb2.DT_UINT16: ("int_val", 1),
    types_pb2.DT_INT64: ("int64_val", 1),
    types_pb2.DT_UINT32: ("uint32_val", 1),
    types_pb2.DT_UINT64: ("uint64_val", 1),
    types_pb2.DT_BOOL: ("bool_val", 1),
    types_pb2.DT_STRING: ("string_val", 1),
    types_pb2.DT_HALF: ("half_val", 1),
    types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
}
_ALL_VALUE_FIELDS = {field for field, _ in _VALUE_FIELDS.values()}


def input_arrays(signature, tensors, budget):
    """Numpy arrays from a request's TensorProtos, each checked before it is built.

    Names, dtype, shape and value count are checked on the proto, and the elements its shape
    claims are counted against ``budget`` (an ElementBudget), so no array larger than the cap is
    ever allocated. Like TensorFlow (and so TF Serving), fewer values than the shape holds are
    padded with the last value (zeros when there are none); more values than it holds is refused,
    where TensorFlow would silently drop the extras.
    """
    signature.check_names(tensors)
    return {
        key: _tensor_array(key, proto, signature.inputs[key], budget)
        for key, proto in sorted(tensors.items())
    }


def _tensor_array(key, proto, spec, budget):
    if proto.dtype != spec.dtype.as_datatype_enum:
        sent = (
            types_pb2.DataType.Name(proto.dtype)
            if proto.dtype in types_pb2.DataType.values()
            else proto.dtype
        )
        raise BadRequest(f"input {key!r} has dtype {sent}, the signature expects {dtype_name(spec.dtype)}")
    if proto.dtype not in _VALUE_FIELDS:
        raise BadRequest(f"input {key!r} has dtype {dtype_name(spec.dtype)}, which a request cannot carry")
    if proto.tensor_shape.unknown_rank:
        raise BadRequest(f"input {key!r} has no shape (unknown_rank); give its dims")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise BadRequest(f"input {key!r} has shape {shape}; every dim must be a size >= 0")
    count = math.prod(shape)  # Python ints: a claimed 2^40 x 2^40 cannot overflow
    budget.claim(key, count, shape)
    field, per_element = _VALUE_FIELDS[proto.dtype]
    stray = sorted(f.name for f, _ in proto.ListFields() if f.name in _ALL_VALUE_FIELDS - {field})
    if stray:
        raise BadRequest(
            f"input {key!r} is {dtype_name(spec.dtype)} but has values in {stray[0]}; use {field}"
        )
    if proto.tensor_content:
        itemsize = np.dtype(spec.dtype.as_numpy_dtype).itemsize
        if proto.dtype == types_pb2.DT_STRING or len(proto.tensor_content) != count * itemsize:
            raise BadRequest(
                f"input {key!r} has {len(proto.tensor_content)} bytes of tensor_content; shape {shape} of "
                f"{dtype_name(spec.dtype)} needs {count * itemsize}"
            )
    else:
        values = len(getattr(proto, field)) // per_element
        if values > count:
            raise BadRequest(
                f"input {key!r} has {values} values, more than the {count} its shape {shape} holds"
            )
    try:
        return _proto_array(proto, field, count, shape, spec)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"input {key!r} is not a valid TensorProto: {exc}") from None


# dtypes whose value field holds the elements themselves (no bit patterns, no pairs)
_PLAIN_FIELDS = {
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_INT32,
    types_pb2.DT_INT16,
    types_pb2.DT_INT8,
    types_pb2.DT_UINT8,
    types_pb2.DT_UINT16,
    types_pb2.DT_INT64,
    types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
    types_pb2.DT_BOOL,
}


def _proto_array(proto, field, count, shape, spec):
    """The array of a checked TensorProto, as tf.make_ndarray builds it, without its per-call
    dtype lookups: tensor_content read in place, a typed value list converted in one step and
    padded with its last value (TensorFlow's rule) when shorter than the shape."""
    dtype = np.dtype(spec.dtype.as_numpy_dtype)
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype).reshape(shape)
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif proto.dtype in _PLAIN_FIELDS:
        values = np.asarray(getattr(proto, field), dtype=dtype)
    else:  # half, bfloat16, complex: rare in requests, converted by TensorFlow's own reader
        return tf.make_ndarray(proto)
    if len(values) < count:  # TensorFlow pads with the last value, zeros (b"") when there is none
        fill = values[-1:] if len(values) else np.full(1, b"" if values.dtype == object else 0, values.dtype)
        values = np.concatenate([values, np.repeat(fill, count - len(values))])
    return values.reshape(shape)


# The dtypes tf.make_tensor_proto writes as tensor_content (others go to their value field).
_CONTENT_DTYPES = {
    np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64)
} | {np.dtype(t) for t in (np.uint8, np.uint32, np.uint64)}


# One element goes to its dtype's value field, as tf.make_tensor_proto writes it.
_SINGLE_VALUE_FIELDS = {
    np.dtype(np.float32): "float_val",
    np.dtype(np.float64): "double_val",
    np.dtype(np.int32): "int_val",
    np.dtype(np.int64): "int64_val",
}


def encode_tensor(array, proto):
    """Fill the empty TensorProto ``proto`` with ``array`` as tf.make_tensor_proto writes it
    (several numbers as tensor_content, one in its value field, strings as string_val), without
    its per-call inspection."""
    single = array.size == 1 and array.dtype != object
    if array.dtype != object and (
        array.dtype not in _CONTENT_DTYPES or (single and array.dtype not in _SINGLE_VALUE_FIELDS)
    ):
        proto.CopyFrom(tf.make_tensor_proto(array))  # bool, bfloat16, complex: TensorFlow's encoder
        return
    proto.dtype = types_pb2.DT_STRING if array.dtype == object else tf.as_dtype(array.dtype).as_datatype_enum
    proto.tensor_shape.SetInParent()  # present even for a scalar
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    if array.dtype == object:
        proto.string_val.extend(array.reshape(-1).tolist())
    elif single:
        getattr(proto, _SINGLE_VALUE_FIELDS[array.dtype]).append(array.reshape(-1)[0].item())
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata (Classify, Regress and MultiInference answer UNIMPLEMENTED)."""

    def __init__(self, models, max_request_elements=DEFAULT_MAX_REQUEST_ELEMENTS, predictor=None):
        self.models = models
        self.max_request_elements = max_request_elements
        self.predictor = predictor or Predictor()

    @_answers_request_errors
    def Predict(self, request, context):
        with self.predictor.timed("predict", "grpc") as timed:
            spec = request.model_spec
            timed.model = spec.name
            repository, servable = _servable(self.models, spec)
            signature = servable.signature(spec.signature_name)
            timed.signature = signature.name
            arrays = input_arrays(signature, request.inputs, ElementBudget(self.max_request_elements))
            outputs = self.predictor.predict(
                repository.name, servable, signature, arrays, tuple(request.output_filter)
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.name = repository.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature.name
            for key, array in outputs.items():
                encode_tensor(array, response.outputs[key])
            return response

    @_answers_request_errors
    def GetModelMetadata(self, request, context):
        with self.predictor.timed("metadata", "grpc") as timed:
            timed.model = request.model_spec.name
            repository, servable = _servable(self.models, request.model_spec)
            unsupported = [f for f in request.metadata_field if f != "signature_def"]
            if unsupported or not request.metadata_field:
                raise BadRequest('metadata_field must be ["signature_def"], the only metadata served')
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = repository.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_defs)
            return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus (HandleReloadConfigRequest answers UNIMPLEMENTED: edit the model config file
    instead, which the server re-reads)."""

    def __init__(self, models, predictor=None):
        self.models = models
        self.predictor = predictor or Predictor()

    @_answers_request_errors
    def GetModelStatus(self, request, context):
        with self.predictor.timed("status", "grpc") as timed:
            spec = request.model_spec
            timed.model = spec.name
            repository = self.models.repository(spec.name)
            if spec.version_label:
                version = repository.version_for_label(spec.version_label)
            else:
                version = spec.version.value if spec.HasField("version") else None
            return repository.status_response(version)


def grpc_server(
    models,
    host,
    port,
    max_message_bytes,
    max_request_elements=DEFAULT_MAX_REQUEST_ELEMENTS,
    workers=DEFAULT_WORKERS,
    predictor=None,
):
    """A started-ready (not yet started) grpc.Server with both services, and the port it bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="graphopt-grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # without this, Linux lets a second server bind a port already in use
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(models, max_request_elements, predictor), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(models, predictor), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # gRPC's core logs a failed bind on stderr before Python hears of it: try the port first
    refusal = _bind_refusal(host, port) if port else None
    bound = 0 if refusal else _add_port(server, address)
    if bound == 0:
        raise GraphoptError(
            f"cannot listen for gRPC on {address}: {refusal or 'the port is in use'}; "
            "choose another with --grpc-port"
        )
    return server, bound


def _bind_refusal(host, port):
    """Why binding host:port fails (e.g. "Address already in use"), or None when it works."""
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind(sockaddr)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _add_port(server, address):
    try:
        return server.add_insecure_port(address)
    except RuntimeError:
        return 0
