"""Dry runs: what `fab provision` and `fab deploy` would change, found with read-only commands and shown.

A config file that would change is shown as a unified diff between the server's copy and the one provision
would write; anything else as the commands that would run. Nothing here runs a step's script. What comes
from the server (file contents) is data: every printed line has its control characters escaped, so a file
cannot drive the terminal, and user:password in URLs is masked. A file that is secret (marked so, or one that
other users may not read on the server: a key list, sudo rules) is never fetched and only said to differ.

What a dry run runs on the server only reads: the steps' probes (stat, sha256sum, readlink, dpkg-query,
`systemctl is-enabled`, `nft list`, `nginx -v`, `ssh -Q`, psql SELECTs, openssl x509 ...), the files' contents
(head | base64), the deploy's state probes, and the environment file's preview (`env_file(preview=True)`);
tests/unit/test_dryrun.py checks that no probe command writes. No step's script, `before` or `confirm` runs.
"""

from __future__ import annotations

import base64
import difflib
import re
import unicodedata
from typing import Iterable, Sequence

from ..connection.remote import Remote
from ..project import migration_safety
from ..session.runner import Recap, Reporter
from ..commands import envfile
from ..commands.shell import q
from ..facts.steps import Facts, File, PathState, Probe, Step

DONE = "dry run: nothing was changed"
LATER = ("later steps may differ once earlier ones are applied: every step is planned against the server as it "
         "is now (a real run reads the server again after each change)")
# Larger files are said to differ, not shown.
MAX_SHOWN_BYTES = 256 * 1024
MAX_DIFF_LINES = 200
MAX_COMMAND_LINES = 6
MAX_LINE = 300
INDENT = " " * 12

_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def safe(text: str) -> str:
    """`text` fit to print on a terminal: control and format characters (escape sequences, carriage returns,
    bidirectional overrides) written as escapes, and user:password in URLs masked."""
    out = []
    for char in text:
        if char != "\t" and unicodedata.category(char).startswith("C"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return _CREDENTIALS.sub(r"\1***@", "".join(out))


def _lines(data: bytes) -> list[str] | None:
    """The lines of a text file, or None for binary content."""
    if b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    else:
        lines[-1] += "\\ (no newline at end of file)"
    return lines


def file_diff(path: str, old: bytes | None, new: bytes, hidden: bool = False) -> list[str]:
    """What changes in the file at `path`: a unified diff from `old` (None: no such file) to `new`; only a
    sentence for a secret, binary or very large file."""
    if hidden:
        return ["content not shown: the file is secret"]
    before = [] if old is None else _lines(old)
    after = _lines(new)
    if before is None or after is None:
        return [f"binary content differs ({len(old or b'')} -> {len(new)} bytes)"]
    if max(len(old or b""), len(new)) > MAX_SHOWN_BYTES:
        return [f"content differs ({len(old or b'')} -> {len(new)} bytes, too large to show)"]
    diff = list(difflib.unified_diff(before, after, "/dev/null" if old is None else f"{path} (on the server)",
                                     f"{path} (as provision would write it)", lineterm=""))
    if len(diff) > MAX_DIFF_LINES:
        diff = diff[:MAX_DIFF_LINES] + [f"... {len(diff) - MAX_DIFF_LINES} more lines"]
    return [safe(line) for line in diff]


def command_lines(commands: Iterable[str]) -> list[str]:
    """Commands as they would run, each cut to a few lines of bounded width."""
    out = []
    for command in commands:
        lines = command.strip().splitlines() or [""]
        for index, line in enumerate(lines[:MAX_COMMAND_LINES]):
            line = line if len(line) <= MAX_LINE else line[:MAX_LINE] + " ..."
            out.append(("$ " if index == 0 else "  ") + safe(line))
        if len(lines) > MAX_COMMAND_LINES:
            out.append(f"  ... {len(lines) - MAX_COMMAND_LINES} more lines")
    return out


def _mode_owner(op: File, state: PathState | None) -> str:
    if state is None or not state.kind.startswith("regular"):  # a link's mode says nothing
        return ""
    parts = []
    if state.mode.lstrip("0") != op.mode.lstrip("0"):
        parts.append(f"mode {state.mode} -> {op.mode}")
    if (state.owner, state.group) != (op.owner, op.group):
        parts.append(f"owner {state.owner}:{state.group} -> {op.owner}:{op.group}")
    return safe(", ".join(parts))


def _shows_content(op, facts: Facts) -> bool:
    """A file whose changed content a dry run shows: fetch the server's copy (only a regular file's)."""
    if not isinstance(op, File) or op.hidden or not op.plan(facts) or not op.content_differs(facts):
        return False
    state = facts[f"path:{op.path}"]
    return state is not None and state.kind.startswith("regular")


def content_probe(path: str) -> Probe:
    """A file's first bytes (one more than are ever shown), read-only, base64 so any content travels intact."""
    return Probe(f"content:{path}", f"head -c {MAX_SHOWN_BYTES + 1} {q(path)} | base64 -w0",
                 lambda out, rc: base64.b64decode(out.strip()) if rc == 0 else None)


def step_details(step: Step, facts: Facts, contents: dict[str, bytes | None]) -> list[str]:
    """What a changed step would do: each file's diff, each other change's commands, the reload after."""
    out = []
    for op in step.operations:
        changes = op.plan(facts)
        if not changes:
            continue
        if isinstance(op, File):
            state = facts[f"path:{op.path}"]
            mode_owner = _mode_owner(op, state)
            out.append(safe(changes[0].what) + (f" ({mode_owner})" if mode_owner else ""))
            if op.content_differs(facts):
                old = contents.get(f"content:{op.path}") if state is not None else None
                if state is not None and old is None and not op.hidden:
                    out.append("  content differs (the server's copy is not a regular file it could read)")
                else:
                    out += ["  " + line for line in file_diff(op.path, old, op.wanted(facts), op.hidden)]
            continue
        for change in changes:
            out.append(safe(change.what))
            out += ["  " + line for line in command_lines(change.commands)]
    if step.validate:
        out.append(f"checked before it takes effect: {safe(step.validate)}")
    if step.after:
        out.append("then:")
        out += ["  " + line for line in command_lines(step.after)]
    return out


def preview(remote: Remote, steps: Sequence[Step], reporter: Reporter) -> Recap:
    """Plan every step against the server as it is, print what would change, change nothing: the facts in
    one read-only round trip, the current content of the files that would change in a second one."""
    recap = Recap()
    reporter.line(f"  note: {LATER}")
    facts = remote.gather(p for s in steps for p in s.probes())
    shown = {op.path for s in steps for op in s.operations if _shows_content(op, facts)}
    contents = remote.gather(content_probe(path) for path in sorted(shown)) if shown else {}
    shown_plans = set()
    for step in steps:
        plan = step.plan(facts)
        if plan.script is None:
            recap.unchanged.append(step.title)
            reporter.step("ok", step.title, safe(plan.note))  # notes hold the server's words (its host name...)
            continue
        recap.changed.append(step.title)
        if (step.title, plan.script) in shown_plans:  # a step that runs twice (the nginx site, before TLS and after)
            reporter.step("to change", step.title, "the same as above, as the server is now")
            continue
        shown_plans.add((step.title, plan.script))
        reporter.step("to change", step.title)
        for line in step_details(step, facts, contents):
            reporter.line(INDENT + line)
    return recap


# --- deploy -------------------------------------------------------------------------------------------------

def migration_files(archive: bytes) -> list[str]:
    """The migrations a project's archive holds as files, "label.name" (the label is the app's directory name,
    Django's default), in file order."""
    return list(migration_safety.migration_files(archive))


def env_changes(before: str | None, after: str, shown: set[str]) -> list[str]:
    """The changes to the app's environment file, a line each. Values appear only for the names in `shown`
    (gangway's own, never secret); every other value (the secret key, the inventory's app.env, the operator's
    lines) is named, never printed."""
    old, new = envfile.parse(before), envfile.parse(after)
    out = []
    for key in sorted(new.keys() | old.keys()):
        name = safe(key)
        if key not in old:
            value = (f"={safe(new[key])}" if key in shown else
                     " (generated on the server, never shown)" if key == "DJANGO_SECRET_KEY" else " (value not shown)")
            out.append(f"+ {name}{value}")
        elif key not in new:
            out.append(f"- {name}")
        elif old[key] != new[key]:
            out.append(f"~ {name}: {safe(old[key])} -> {safe(new[key])}" if key in shown
                       else f"~ {name} (value changed, not shown)")
    return out
