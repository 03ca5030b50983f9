"""Apply steps to a server: gather facts in one round trip, change only what differs, say what happened."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, TextIO

from ..connection.remote import Remote, RemoteError
from ..facts.steps import Step


class StepFailed(RemoteError):
    """A step whose commands failed: the run stops there, earlier steps stay applied."""


@dataclass
class Recap:
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.changed) + len(self.unchanged)


# ANSI colours of the statuses on a terminal; plain output (a CI log, a file) never has any.
COLOURS = {"changed": "33", "FAILED": "1;31", "WARNING": "33", "ok": "32"}


def is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


class Reporter:
    """One line per step (its status, and its time when it ran something), a recap at the end.

    On a terminal the statuses are coloured (unless NO_COLOR is set) and a step still running after 10 s says
    so every 10 s; in plain output (stdout is a file or a pipe: CI logs) every line is plain text ending in a
    newline, and a long step says it is still running once a minute.
    """

    def __init__(self, out: TextIO | None = None, terminal: bool | None = None):
        self.out = out or sys.stdout
        self.terminal = is_terminal(self.out) if terminal is None else terminal
        self.colour = self.terminal and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self.every = 10.0 if self.terminal else 60.0  # seconds between "still running" lines
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def step(self, status: str, title: str, detail: str = "", seconds: float | None = None) -> None:
        label = f"{status:<9}"
        if self.colour and status in COLOURS:
            label = f"\033[{COLOURS[status]}m{label}\033[0m"
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        self.line(f"  {label} {title}" + (f": {detail}" if detail else "") + took)

    @contextmanager
    def running(self, title: str, so_far: Callable[[], str] = lambda: "") -> Iterator[None]:
        """While the body runs: "  …         TITLE: still running (40 s)" every `every` seconds, with how far it
        got when `so_far` says ("TITLE: 812 MiB written (40 s)")."""
        done = threading.Event()
        started = time.monotonic()

        def tell() -> None:
            while not done.wait(self.every):
                self.line(f"  {'…':<9} {title}: {so_far() or 'still running'} "
                          f"({time.monotonic() - started:.0f} s)")

        thread = threading.Thread(target=tell, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def apply(remote: Remote, steps: Sequence[Step], reporter: Reporter) -> Recap:
    """Run `steps` in order. Facts are gathered for all remaining steps at once, and again only after a change."""
    recap = Recap()
    facts = None
    for index, step in enumerate(steps):
        if facts is None:
            facts = remote.gather(p for s in steps[index:] for p in s.probes())
        plan = step.plan(facts)
        if plan.script is None:
            recap.unchanged.append(step.title)
            reporter.step("ok", step.title, plan.note)
            continue
        if step.before:
            step.before()
        started = time.monotonic()
        with reporter.running(step.title):
            result = remote.run(plan.script)
        if not result.ok:
            reporter.step("FAILED", step.title, seconds=time.monotonic() - started)
            hint = f"\n{step.hint}" if step.hint else ""
            raise StepFailed(f"step '{step.title}' failed on {remote.connection.host}; the steps before it are "
                             f"applied, nothing after it ran.\n{result.tail()}{hint}")
        if step.confirm:
            try:
                step.confirm()
            except Exception as error:
                undone = remote.run(step.undo).ok if step.undo else False
                reporter.step("FAILED", step.title)
                raise StepFailed(f"step '{step.title}': applied, but a new SSH connection then failed ({error}); "
                                 + ("the change was undone." if undone else "undoing it failed too.")) from None
        recap.changed.append(step.title)
        reporter.step("changed", step.title, "; ".join(c.what for c in plan.changes)
                      + (f" ({step.changed_note})" if step.changed_note else ""), seconds=time.monotonic() - started)
        facts = None  # a change can alter what later steps see
    return recap
