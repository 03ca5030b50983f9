"""The environment files systemd reads (EnvironmentFile=): one writer and one reader of NAME=value lines.

Both of the app's files go through here: shared/env (gangway's managed keys, the secret key, the operator's
own lines) and the `fab config` file. A value is written inside double quotes, where systemd takes a backslash
before " \\ ` $ as an escape, keeps any other backslash, and expands nothing; a value that is not one line of
text is refused. The reader follows systemd's own parser, so what it returns is what the app's process gets.

`reader_source()` is the reader as Python source, for the programs gangway runs on the server.
"""

from __future__ import annotations

import inspect

from ..oneline import control_problem

# The first line of the environment file: the keys gangway manages in it (the rest is the operator's).
ENV_FILE_MARK = "# managed by gangway: "
# What systemd's parser unescapes after a backslash inside double quotes (its SHELL_NEED_ESCAPE).
ESCAPED = '"\\`$'


def value_problem(value: str) -> str | None:
    """Why `value` cannot be a line of an environment file, or None."""
    if problem := control_problem(value):
        return f"{problem}; a value is one line of text"
    return None


def encode_line(name: str, value: str) -> str:
    """NAME="value", read back by systemd as exactly `value`; ValueError for a value that is not one line."""
    if problem := value_problem(value):
        raise ValueError(f"{name}: the value {problem}")
    return f'{name}="' + "".join("\\" + c if c in ESCAPED else c for c in value) + '"'


# The reader: no imports and no names but its own and ESCAPED, so that `reader_source` can send it to the server.

def split_line(line):
    """(name, the raw text after =) of an assignment line; None for a blank line, a comment (# or ;) or a line
    without =."""
    stripped = line.strip(" \t")
    if not stripped or stripped[0] in "#;" or "=" not in stripped:
        return None
    name, raw = stripped.split("=", 1)
    return name.rstrip(" \t"), raw


def unquote(raw):
    """A value as systemd reads the text after = on one line (its parser's states, one for one): before the
    value and after a closing quote, blanks are skipped and a quote opens; 'single quotes' hold anything as it
    is; inside "double quotes" a backslash escapes " \\ ` $ and stays before anything else; in a bare value a
    quote is a quote, a backslash takes the next character as it is, and trailing blanks are dropped."""
    out, state, cut, i = [], "pre", None, 0
    while i < len(raw):
        char = raw[i]
        if state == "single":
            if char == "'":
                state = "pre"
            else:
                out.append(char)
        elif state == "double":
            if char == '"':
                state = "pre"
            elif char == "\\":
                if i + 1 < len(raw):
                    i += 1
                    out.append(raw[i] if raw[i] in ESCAPED else "\\" + raw[i])
            else:
                out.append(char)
        elif char == "\\":
            if i + 1 < len(raw):
                i += 1
                out.append(raw[i])
            state, cut = "bare", None
        elif state == "pre" and char in "'\"":
            state = "single" if char == "'" else "double"
        elif state == "pre" and char in " \t":
            pass
        else:
            if char not in " \t":
                cut = None
            elif cut is None:
                cut = len(out)
            out.append(char)
            state = "bare"
        i += 1
    if state == "bare" and cut is not None:
        out = out[:cut]
    return "".join(out)


def parse(text):
    """{name: value} of an environment file, as systemd reads it (a later line wins)."""
    found = {}
    for line in (text or "").replace("\r", "\n").split("\n"):
        split = split_line(line)
        if split:
            found[split[0]] = unquote(split[1])
    return found


def reader_source() -> str:
    """`split_line`, `unquote` and `parse` as Python source, to define them in a program run on the server."""
    return f"ESCAPED = {ESCAPED!r}\n" + "".join(inspect.getsource(function) + "\n"
                                                for function in (split_line, unquote, parse))
