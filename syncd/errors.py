"""The exception tree. Errors are named by what the runtime must do with them.

::

    SyncdError
    ├── ConfigError            the config is wrong: exit 2, name the YAML path
    ├── SourceReadError        a source did not answer in full: plan nothing, delete nothing
    ├── StateError             the state store cannot be used now (unreachable, locked)
    │   └── StateVersionError  the store was written by a newer syncd: exit 2
    └── ConnectorError         a destination call failed; the executor decides what next
        ├── RetryableError     try again after ``retry_after`` (server-given) or backoff
        │   └── RateLimited    the platform throttled us
        ├── PermanentError     this key failed; retrying will not help
        │   ├── KeyRejected    the platform refused the key or value (name, size, format)
        │   ├── QuotaExceeded  an account quota, not a throttle
        │   └── ConflictError  the platform refused the write as conflicting
        └── AuthError          credentials or permissions: every key of the pair fails

No message in this tree ever carries a secret value: connectors build messages from key
names, status codes and the platform's error code, never from request bodies.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """The configuration is invalid. ``path`` is the YAML path, e.g. ``syncs[0].to[1]``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class ConfigErrors(SyncdError):
    """Several configuration errors found in one pass."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class SourceReadError(SyncdError):
    """A source failed to answer, or answered only in part. Nothing is deleted.
    ``retry_after``: the wait the source asked for; ``throttled``: it throttled the read."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, throttled: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled


class StateError(SyncdError):
    """The state store could not be read or written (unreachable, locked too long)."""


class StateVersionError(StateError):
    """The state store's schema is newer than this syncd: refuse it rather than guess."""


class ConnectorError(SyncdError):
    """A destination call failed."""


class RetryableError(ConnectorError):
    """Worth another try, after ``retry_after`` seconds if the server said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """The platform throttled the call (HTTP 429, ThrottlingException, secondary limits)."""


class PermanentError(ConnectorError):
    """The call will fail the same way again: fail this key, keep going."""


class KeyRejected(PermanentError):
    """The platform refused this key's name or value."""


class QuotaExceeded(PermanentError):
    """An account or scope quota was reached. Not a throttle: not retried."""


class ConflictError(PermanentError):
    """The platform refused the write as conflicting with an existing object."""


class AuthError(ConnectorError):
    """Credentials are missing, expired or lack a permission."""
