"""Text from a user's file made safe to print: no terminal escapes, no unbounded length."""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """`text` with every non-printable character (ESC, newlines, bidi overrides, ...) as a visible escape
    and cut to `limit` characters, so a file cannot drive the terminal or flood it."""
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def shown(value: object, limit: int = 60) -> str:
    """A bounded repr of a value from a file, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
