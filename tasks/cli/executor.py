"""Fabric's executor, with one difference: `fab manage -- ARGS` hands ARGS to the manage task.

Fabric turns the text after `--` into a shell command for the `-H` hosts (and refuses it without `-H`). When
the manage task is among the tasks to run, this executor keeps that text for it instead, as the words the
shell gave (read from the command line itself: invoke joins them into one string, losing their quoting).
"""

from __future__ import annotations

import shlex
import sys

import fabric

from ..collection import manage


def remainder_argv(remainder: str, argv: list[str] | None = None) -> list[str]:
    """The words after the first `--` of the command line, as the shell split them; split from invoke's
    joined string only when the command line is not the one invoke parsed (a program run with its own argv)."""
    argv = sys.argv if argv is None else argv
    if "--" in argv:
        words = argv[argv.index("--") + 1:]
        if " ".join(words) == remainder:
            return words
    return shlex.split(remainder)


def is_manage(call) -> bool:
    """Whether a call (or task) is the manage task; a loaded collection holds deep copies of the tasks, which
    keep the function itself."""
    return getattr(getattr(call, "task", call), "body", None) is manage.body


class Executor(fabric.Executor):
    def expand_calls(self, calls, apply_hosts=True):
        remainder = self.core.remainder if self.core is not None else ""
        if not remainder or not any(is_manage(call) for call in calls):
            return super().expand_calls(calls, apply_hosts)
        self.core.remainder = ""  # no anonymous shell command: the words are the manage task's
        try:
            expanded = super().expand_calls(calls, apply_hosts)
        finally:
            self.core.remainder = remainder
        words = remainder_argv(remainder)
        for call in expanded:
            if is_manage(call):
                call.kwargs["args"] = words
        return expanded
