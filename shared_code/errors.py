"""The core's typed errors. Each carries the HTTP status and a stable machine-readable code.

They are mapped to HTTP responses and result statuses in one place (functions/errors.py); the core
never knows about HTTP frameworks.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an expected failure with a client-safe message."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageRejected(ServiceError):
    """The bytes are not an image the service accepts; retrying will not help."""

    status_code = 400
    code = "invalid_image"


class EmptyImage(ImageRejected):
    code = "empty_image"


class InvalidImage(ImageRejected):
    """Undecodable, truncated or corrupt data in a recognised format."""

    code = "invalid_image"


class NotAnImage(InvalidImage):
    """Bytes in no image format at all (text, PDF, an archive): a broken request (400), not a format choice."""


class UnsupportedFormat(ImageRejected):
    """A recognised image format that is not accepted (SVG, HEIF, ...)."""

    status_code = 415
    code = "unsupported_format"


class ImageTooLarge(ImageRejected):
    """Too many bytes, or too many pixels declared (checked before decoding)."""

    status_code = 413
    code = "image_too_large"


class DecodeTooSlow(ImageRejected):
    """Decoding took longer than DECODE_TIMEOUT_S (measured afterwards: Pillow cannot be interrupted)."""

    status_code = 422
    code = "decode_timeout"


class ModelUnavailable(ServiceError):
    status_code = 503
    code = "model_unavailable"


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class AccountErased(Conflict):
    """The account's data was erased moments ago; a write still in flight from before must not bring it back."""

    code = "account_erased"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimited(ServiceError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransientError(ServiceError):
    """A dependency failed in a way that a retry may fix (throttling, timeouts, 5xx)."""

    status_code = 503
    code = "temporarily_unavailable"
