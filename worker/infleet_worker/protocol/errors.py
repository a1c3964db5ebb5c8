"""Error kinds of the request path, mapped once to HTTP statuses and gRPC codes."""

from __future__ import annotations

from enum import Enum

import grpc


class ErrorKind(Enum):
    INVALID = "invalid"  # malformed request: 400 / INVALID_ARGUMENT
    NOT_FOUND = "not_found"  # unknown model or version: 400 / NOT_FOUND (as Triton)
    TOO_LARGE = "too_large"  # body over max_request_bytes: 413 / RESOURCE_EXHAUSTED
    UNAVAILABLE = "unavailable"  # queue full, draining, not ready: 503 / UNAVAILABLE
    TIMEOUT = "timeout"  # queue timeout: 503 / DEADLINE_EXCEEDED
    INTERNAL = "internal"  # engine failure: 500 / INTERNAL


HTTP_STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 400,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 503,
    ErrorKind.INTERNAL: 500,
}

GRPC_CODE = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}

# Metric outcome label for each kind (infleet_requests_total{outcome=...}).
OUTCOME = {
    ErrorKind.INVALID: "invalid",
    ErrorKind.NOT_FOUND: "invalid",
    ErrorKind.TOO_LARGE: "invalid",
    ErrorKind.UNAVAILABLE: "rejected",
    ErrorKind.TIMEOUT: "timeout",
    ErrorKind.INTERNAL: "error",
}


class InferError(Exception):
    """A request failed; ``kind`` picks the status, ``message`` goes to the client."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.kind]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return GRPC_CODE[self.kind]

    @property
    def outcome(self) -> str:
        return OUTCOME[self.kind]


def invalid(message: str) -> InferError:
    return InferError(ErrorKind.INVALID, message)


def not_found(message: str) -> InferError:
    return InferError(ErrorKind.NOT_FOUND, message)


def unavailable(message: str) -> InferError:
    return InferError(ErrorKind.UNAVAILABLE, message)
