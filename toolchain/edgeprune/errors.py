"""The one exception type a user sees: a single line saying what is wrong and what to do."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]


class EdgepruneError(Exception):
    """A user-facing failure. The CLI prints `error: <message>` and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(EdgepruneError):
    """Bad input from the user (file, flag, data): exit code 2, like click's own usage errors."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)
