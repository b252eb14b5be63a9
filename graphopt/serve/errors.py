"""Failures of one serving request: each carries the HTTP status and the gRPC code it maps to."""

import grpc

from graphopt.errors import GraphoptError


class RequestError(GraphoptError):
    """A request the server cannot answer; the message tells the client what to fix."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class BadRequest(RequestError):
    """Malformed body, unknown input or signature, wrong dtype or shape (HTTP 400)."""


class NotFound(RequestError):
    """Unknown model, version or path (HTTP 404)."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class PayloadTooLarge(RequestError):
    """The request body is larger than the server accepts (HTTP 413)."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ModelFailed(RequestError):
    """The model raised while computing an answer to a well-formed request (HTTP 500)."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
