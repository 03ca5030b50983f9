"""What may stand in a value written on one line: the one test for line breaks and control characters.

A value the inventory, the operator or a template puts on one line of a file (a config setting, an
EnvironmentFile line, a path) must not hold a character that ends the line or hides on screen. Callers name
their own fix; the finding itself is said the same way everywhere.
"""

from __future__ import annotations

import unicodedata

# What ends a line for some reader: \n \r, vertical tab, form feed, NEL, the Unicode line and paragraph separators.
LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"


def first_control(value: str) -> tuple[int, str] | None:
    """The first line break, tab or other control or format character in `value`: (position from 1, char)."""
    for i, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") or (char.isspace() and char != " "):
            return i + 1, char
    return None


def control_problem(value: str) -> str | None:
    """What is wrong with `value` as one line of text, said in a clause ("contains a line break ('\\n' at
    position 4)"), or None; the caller adds where it was going and how to fix it."""
    found = first_control(value)
    if found is None:
        return None
    position, char = found
    kind = "a line break" if char in LINE_BREAKS else "an invisible control character"
    return f"contains {kind} ({char!r} at position {position})"
