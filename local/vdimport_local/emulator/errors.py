"""OCI service errors as the real services send them: a status and a ``{"code", "message"}`` body."""

from __future__ import annotations


class OCIError(Exception):
    """An error answer. Handlers raise it; the dispatcher renders it as OCI does."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(what: str) -> OCIError:
    """OCI answers 404 NotAuthorizedOrNotFound for both missing and forbidden resources."""
    return OCIError(404, "NotAuthorizedOrNotFound", f"{what} not found or not authorized")


def invalid(message: str) -> OCIError:
    return OCIError(400, "InvalidParameter", message)


def missing(name: str) -> OCIError:
    return OCIError(400, "MissingParameter", f"Missing parameter: {name}")


def conflict(message: str) -> OCIError:
    return OCIError(409, "Conflict", message)


def incorrect_state(message: str) -> OCIError:
    return OCIError(409, "IncorrectState", message)


def not_authenticated(reason: str) -> OCIError:
    message = f"The required information to complete authentication was not provided or was incorrect: {reason}"
    return OCIError(401, "NotAuthenticated", message)


def throttled() -> OCIError:
    return OCIError(429, "TooManyRequests", "Too many requests for the tenancy")


def out_of_capacity() -> OCIError:
    return OCIError(500, "InternalError", "Out of host capacity.")
