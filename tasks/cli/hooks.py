"""Release hooks (the inventory's app.hooks) in a deploy: run them at their point, show their output, and say
what a failure means for the release and for what is live.

- after_build: in the build's round trip, before Django's checks (`tasks.cli.deploy._build`): a failure sets the
  release aside like a failed check;
- after_migrate: after the migrate, before the switch: a failure sets the release aside and reverses the
  migrations the deploy applied (`tasks.cli.deploy.deploy_to`);
- after_switch: once traffic moved: a failure leaves the release live, is reported FAILED, and the deploy exits
  non-zero.
A rollback runs none: hooks belong to a deploy of new code.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..commands import hooks as commands, release
from ..commands.shell import join
from ..connection.remote import RemoteError
from ..inventory import HOOK_POINTS, Hook
from ..session.run import DeployError, Session, last_lines
from . import dryrun

# Who runs the hooks of each point, and where they run, as the deploy's output says it.
RUN_AS = {"after_build": "as the build user, before Django's checks",
          "after_migrate": "as the app user, after migrate, before the switch",
          "after_switch": "as the app user, after the switch"}
# The lines of a failed hook's output its failure message quotes (all it printed is shown above it).
MESSAGE_LINES = 20


class HookFailed(DeployError):
    """A release hook failed or timed out; the message names it, its point, how it ended and its last lines."""


def steps(session: Session, release_id: str, point: str) -> list[tuple[str, str]]:
    """The named steps of a script that run the hooks at `point` (none when the inventory has none)."""
    return commands.steps(session.layout, release_id, point, session.inventory.app.hooks.at(point))


def run(session: Session, release_id: str, point: str) -> None:
    """Run the hooks at `point` in one round trip, show what each printed, and raise HookFailed at the first
    that fails (the ones after it do not run)."""
    if not session.inventory.app.hooks.at(point):
        return
    with stopped_on_interrupt(session, release_id):
        ok, report, tail = session.run(*steps(session, release_id, point))
    said(session, point, report)
    if not ok:
        raise HookFailed(failure(session, point, report, tail) or f"a {point} hook failed:\n{last_lines(tail)}")


@contextmanager
def stopped_on_interrupt(session: Session, release_id: str) -> Iterator[None]:
    """On Ctrl-C, stop the release's hook units before the interrupt goes on: systemd would otherwise run a hook
    to its timeout with nobody waiting for it (the next deploy's cleanup stops those too)."""
    try:
        yield
    except KeyboardInterrupt:
        if any(session.inventory.app.hooks.at(point) for point in HOOK_POINTS):
            try:
                session.remote.run(commands.stop(session.layout, release_id))
            except (RemoteError, KeyboardInterrupt):
                pass  # a lost connection: RuntimeMaxSec= ends the hook, the next deploy stops it
        raise


def said(session: Session, point: str, report: dict) -> None:
    """Each hook that ran at `point`: its output lines (the last ones, escaped for the terminal), then its step
    line: changed when it succeeded, FAILED when not."""
    for index, hook in enumerate(session.inventory.app.hooks.at(point), 1):
        ran = report.get(commands.step_name(point, index))
        if not isinstance(ran, dict):
            continue
        output = ran.get("output", [])
        if ran.get("lines", 0) > len(output):
            session.reporter.line(f"  | (the last {len(output)} of {ran['lines']} lines)")
        for line in output:
            session.reporter.line(f"  | {dryrun.safe(line)}")
        if ran.get("status") == 0:
            session.reporter.step("changed", f"hook {point}", f"`{dryrun.safe(hook.text)}` ran in "
                                  f"{ran.get('seconds', '?')} s, {RUN_AS[point]}")
        else:
            session.reporter.step("FAILED", f"hook {point}", f"`{dryrun.safe(hook.text)}` {_ended(hook, ran)}")


def failure(session: Session, point: str, report: dict, tail: str) -> str | None:
    """What failed, when the script stopped at a hook of `point`: the hook (its place and command), how it ended
    (exit status, signal, timeout) and its last output lines; None when it stopped elsewhere."""
    hooks = session.inventory.app.hooks.at(point)
    for index, hook in enumerate(hooks, 1):
        name = commands.step_name(point, index)
        if report.get("failed") != name:
            continue
        ran = report.get(name)
        where = f"the {point} hook{f' {index} of {len(hooks)}' if len(hooks) > 1 else ''}, `{dryrun.safe(hook.text)}`,"
        if not isinstance(ran, dict):  # the runner itself failed: its own output says why
            return f"{where} could not be run:\n{last_lines(tail)}"
        lines = [dryrun.safe(line) for line in ran.get("output", [])][-MESSAGE_LINES:]
        text = f"{where} {_ended(hook, ran)}; " + (
            "the last lines of its output:\n" + "\n".join(lines) if lines else "it printed nothing")
        if any("Can't find msgfmt" in line for line in lines):
            text += ("\ncompilemessages needs GNU gettext's msgfmt on the server: `fab provision` installs the "
                     "gettext package when a hook runs compilemessages")
        if point == "after_switch":
            text += "\nOnce its cause is fixed, " + (
                f"run it again with `fab manage -- {dryrun.safe(join(*hook.command[1:]))}`"
                if hook.command[0] == "manage.py" else "deploy again (a deploy runs the hooks again)")
        return text
    return None


def _ended(hook: Hook, ran: dict) -> str:
    """How a failed hook ended, as systemd read it back (its unit's Result= and ExecMainStatus=)."""
    result, status = ran.get("result", ""), ran.get("exit_status", "")
    if result == "timeout":
        return (f"timed out after {hook.timeout} s (its timeout): systemd stopped it (it had run "
                f"{ran.get('seconds', '?')} s)")
    if result in ("signal", "core-dump"):
        return f"was killed by signal {status or '?'}"
    if result == "exit-code" and status == "203":
        return (f"could not be started: {hook.command[0]} is not a program on the server (exit status 203: "
                "systemd could not execute it)")
    if result == "exit-code":
        return f"failed with exit status {status or ran.get('status', '?')}"
    return f"failed (exit status {ran.get('status', '?')}, systemd: {result or 'no result read'})"


def _live(session: Session) -> str | None:
    """The release the server's live link points at now (None: there is no link)."""
    probe = next(p for p in release.state_probes(session.layout, session.database) if p.key == "live")
    return session.remote.gather([probe])["live"]


def serving(session: Session) -> str:
    """What is live now, read back from the server's live link: after a hook failed before the switch, it is
    still the release that was live."""
    live = _live(session)
    if live is None:
        return "no release is live (read back: there is no live link): the placeholder page still shows"
    return f"{live} is still serving (read back: the live link points at its socket)"


def is_live(session: Session, release_id: str) -> str:
    """Whether `release_id` is live now, read back from the server's live link (after an after_switch hook)."""
    live = _live(session)
    if live == release_id:
        return f"{release_id} is live and stays live (read back: the live link points at its socket)"
    return f"the live link points at {live or 'nothing'}, not at {release_id} (read back): see `fab status`"


def preview(session: Session, point: str) -> None:
    """The dry run's line for the hooks at `point`: which would run, as whom, with which timeout."""
    hooks = session.inventory.app.hooks.at(point)
    if hooks:
        session.reporter.step("to run", f"hooks {point}", "; ".join(
            f"`{dryrun.safe(h.text)}` (timeout {h.timeout} s)" for h in hooks) + f", {RUN_AS[point]}")
