"""Exit codes, and the one error type every command raises to stop with `lynx: <message>` on stderr."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1  # the server refused (400, 404, 409, …) or the operation failed
    USAGE = 2  # argparse's own
    NOT_SIGNED_IN = 3  # no token, or the server refused it (401)
    FORBIDDEN = 4  # the role (or a read-only token) may not (403)
    UNREACHABLE = 5  # connection error, timeout, 5xx
    RATE_LIMITED = 6  # 429, after honouring Retry-After once
    INTERRUPTED = 130  # Ctrl-C while waiting on an operation: it goes on without us


class CliError(Exception):
    """Stop the command: `message` is printed as `lynx: message`, the process exits with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def exit_code_for_status(status: int) -> ExitCode:
    if status == 401:
        return ExitCode.NOT_SIGNED_IN
    if status == 403:
        return ExitCode.FORBIDDEN
    if status == 429:
        return ExitCode.RATE_LIMITED
    if status >= 500:
        return ExitCode.UNREACHABLE
    return ExitCode.REFUSED
