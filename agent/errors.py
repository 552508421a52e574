"""One exception type per domain, each carrying a reason a user can act on."""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A configuration file or override is invalid; `errors` lists (key_path, message, value)."""

    def __init__(self, errors: list[tuple[str, str, object]], source: str = "") -> None:
        self.errors = errors
        self.source = source
        lines = [f"{path}: {msg} (got {value!r})" for path, msg, value in errors]
        super().__init__("\n".join(lines) if lines else "invalid configuration")


class ModelError(EdgeAgentError):
    """A model cannot be found, verified, loaded or run; names the file and the reason."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class AcceleratorUnavailable(ModelError):
    """A requested accelerator (delegate library or execution provider) is missing (strict mode)."""


class PluginError(EdgeAgentError):
    """A plugin cannot be found, configured or set up."""


class HalError(EdgeAgentError):
    """A HAL device is unknown, misconfigured or unreachable."""


class OtaError(EdgeAgentError):
    """An over-the-air update or rollback failed; `code` (e.g. `busy`, `no_previous`) names the
    case for a remote reply, `reason` says why."""

    def __init__(self, reason: str, *, code: str) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


class UpdateRejected(OtaError):
    """An over-the-air model update was refused; `reason` says why."""

    def __init__(self, reason: str, *, code: str = "rejected") -> None:
        super().__init__(reason, code=code)


class CommandError(EdgeAgentError):
    """A remote command failed; `code` and `message` go into the error reply."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")
