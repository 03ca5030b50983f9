"""Apply steps to a server: gather facts in one round trip, change only what differs, say what happened."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Sequence, TextIO

from .remote import Remote, RemoteError
from .steps import Step


class StepFailed(RemoteError):
    """A step whose commands failed: the run stops there, earlier steps stay applied."""


@dataclass
class Recap:
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.changed) + len(self.unchanged)


class Reporter:
    """One line per step while it runs, a recap at the end."""

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, status: str, title: str, detail: str = "") -> None:
        self.line(f"  {status:<9} {title}" + (f": {detail}" if detail else ""))


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
        result = remote.run(plan.script)
        if not result.ok:
            reporter.step("FAILED", step.title)
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
                      + (f" ({step.changed_note})" if step.changed_note else ""))
        facts = None  # a change can alter what later steps see
    return recap
