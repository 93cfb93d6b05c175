"""Markdown and shell text from user-controlled strings (run names, paths, architectures, class names): every
report kdforge writes goes through these, so a name cannot break out of a code span or a table cell, and
a command shown to paste gives back, through the shell, exactly the paths it names."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # newlines included: one value stays on one line
_SPECIAL = re.compile(r"[\\`*\[\]<>|~&!#]")  # inline Markdown syntax, and the table-cell separator
_FLANKING_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # `_x_` emphasises, `cnn_2_16` not


def text(value: object) -> str:
    """`value` as literal inline Markdown (safe in a table cell): syntax characters backslash-escaped,
    control characters (newlines) as spaces; plain names like `cnn_2_16` stay as they are."""
    plain = _CONTROL.sub(" ", str(value))
    return _FLANKING_UNDERSCORE.sub(r"\\_", _SPECIAL.sub(lambda m: "\\" + m.group(0), plain))


def code(value: object, *, cell: bool = False) -> str:
    """`value` as an inline code span it cannot close: a fence of more backticks than any run inside it;
    control characters are spaces and, in a table `cell`, a pipe is escaped (GitHub splits cells on it
    even in code; outside a table the backslash would show)."""
    plain = _CONTROL.sub(" ", str(value))
    plain = plain.replace("|", "\\|") if cell else plain
    fence = "`" * (max((len(run) for run in re.findall("`+", plain)), default=0) + 1)
    padded = f" {plain} " if plain.startswith("`") or plain.endswith("`") or not plain.strip() else plain
    return f"{fence}{padded}{fence}"


def code_block(lines: list[str]) -> list[str]:
    """Lines inside a fenced code block whose fence no line (a path may hold newlines) can close."""
    longest = max((len(run) for line in lines for run in re.findall("`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *lines, fence]


def shown_command(words: list[str | Path], before: str = "") -> list[str]:
    """Markdown lines showing one shell command: inline code after `before` when it fits on one line,
    else (a quoted path holding a newline) a fenced block, so it is pasted exactly as quoted."""
    line = command(*words)
    if not _CONTROL.search(line):
        return [f"{before}{code(line)}"]
    return [before.rstrip(), "", *code_block([line])]


def command(*words: str | Path) -> str:
    """A shell command line from its words, each quoted so that `shlex.split` (and a POSIX shell) gives
    it back exactly: a path holding spaces, quotes or `$(...)` is inert when pasted."""
    return shlex.join(str(word) for word in words)
