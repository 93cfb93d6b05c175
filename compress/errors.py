"""The one exception type for mistakes a user can fix: the CLI prints its message and exits 2."""


class UserError(Exception):
    """A problem in the user's input (recipe, path, checkpoint), with a message that names the fix."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters; its type's name when it says
    nothing): how a library's multi-line error is quoted inside a one-line UserError."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__
