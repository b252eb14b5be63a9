"""TF Serving's gRPC services (PredictionService, ModelService) on the official protos."""

import functools
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from graphopt.errors import GraphoptError
from graphopt.serve.errors import BadRequest, RequestError
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


def _requested_version(repository, model_spec):
    repository.check_name(model_spec.name)
    if model_spec.version_label:
        raise BadRequest("version labels are not supported; set model_spec.version")
    return model_spec.version.value if model_spec.HasField("version") else None


def input_arrays(signature, tensors):
    """Numpy arrays from a request's TensorProtos, refusing a dtype the signature does not take."""
    arrays = {}
    for key, proto in tensors.items():
        spec = signature.inputs.get(key)
        if spec is not None and proto.dtype != spec.dtype.as_datatype_enum:
            raise BadRequest(
                f"input {key!r} has dtype {dtype_name(tf.dtypes.as_dtype(proto.dtype))}, "
                f"the signature expects {dtype_name(spec.dtype)}"
            )
        try:
            arrays[key] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"input {key!r} is not a valid TensorProto: {exc}") from None
    return arrays


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata (Classify, Regress and MultiInference answer UNIMPLEMENTED)."""

    def __init__(self, repository):
        self.repository = repository

    @_answers_request_errors
    def Predict(self, request, context):
        servable = self.repository.get(_requested_version(self.repository, request.model_spec))
        signature = servable.signature(request.model_spec.signature_name)
        outputs = signature.run(input_arrays(signature, request.inputs), tuple(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.repository.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for key, array in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(array))
        return response

    @_answers_request_errors
    def GetModelMetadata(self, request, context):
        servable = self.repository.get(_requested_version(self.repository, request.model_spec))
        unsupported = [f for f in request.metadata_field if f != "signature_def"]
        if unsupported or not request.metadata_field:
            raise BadRequest('metadata_field must be ["signature_def"], the only metadata served')
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.repository.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus (HandleReloadConfigRequest answers UNIMPLEMENTED: the base path is watched instead)."""

    def __init__(self, repository):
        self.repository = repository

    @_answers_request_errors
    def GetModelStatus(self, request, context):
        spec = request.model_spec
        self.repository.check_name(spec.name)
        return self.repository.status_response(spec.version.value if spec.HasField("version") else None)


def grpc_server(repository, host, port, max_message_bytes, workers=DEFAULT_WORKERS):
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
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(repository), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(repository), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise GraphoptError(f"cannot listen for gRPC on {address}: the port is in use; choose another with --grpc-port")
    return server, bound
