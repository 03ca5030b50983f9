"""Building remote shell commands as plain strings: quoting in one place, nothing here runs anything.

Every value that comes from the inventory, the operator or the project goes through `q` (or `join`) here; a
script is made by `script`, which stops at its first failing line and says which step failed as data.
"""

from __future__ import annotations

import base64
import json
import shlex

q = shlex.quote

# A line a remote script prints to report facts as data: the marker, a space, one JSON object.
REPORT = "@gangway"
# How a long command says how far it got, on stderr, while it runs (`watched`); the reading side
# (tasks/connection/remote.py) takes these lines out of what the command printed.
PROGRESS = "@gangway-progress"


def join(*tokens: str) -> str:
    """A command from tokens, each quoted: join("rm", "-f", path)."""
    return shlex.join(tokens)


def report(**facts) -> str:
    """A command printing `facts` (known when the script is built) as one report line."""
    return f"printf '%s\\n' {q(REPORT + ' ' + json.dumps(facts, sort_keys=True))}"


def watched(command: str, measure: str, every: int = 2) -> str:
    """`command`, with a progress line on stderr every `every` seconds holding what `measure` prints (it may
    read "$gw_pid", the command's process): for a dump or a restore that takes minutes. The command runs in the
    background so that its exit status is waited for, not polled: it ends the step the moment it ends. The
    watcher's sleep writes nowhere, so that once the watcher is killed nothing holds the output open."""
    return "\n".join([
        f"{command} &",
        "gw_pid=$!",
        f"( while sleep {every} >/dev/null 2>&1; do printf '%s %s\\n' {q(PROGRESS)} \"$({measure})\" >&2; done ) &",
        "gw_watch=$!",
        'if wait "$gw_pid"; then gw_rc=0; else gw_rc=$?; fi',
        'kill "$gw_watch" 2>/dev/null || true',
        'wait "$gw_watch" 2>/dev/null || true',
        '[ "$gw_rc" -eq 0 ] || exit "$gw_rc"',
    ])


def progress_lines(stderr: str) -> tuple[list[str], str]:
    """What `watched` said (each line's text after the marker, in order), and stderr without those lines."""
    said, kept = [], []
    for line in stderr.splitlines(keepends=True):
        if line.startswith(PROGRESS + " "):
            said.append(line[len(PROGRESS) + 1:].strip())
        else:
            kept.append(line)
    return said, "".join(kept)


def parse_reports(stdout: str) -> dict:
    """Every report line of a script's output, merged in order (a later line wins)."""
    merged: dict = {}
    for line in stdout.splitlines():
        if line.startswith(REPORT + " "):
            try:
                value = json.loads(line[len(REPORT) + 1:])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                merged.update(value)
    return merged


def script(*steps: str | tuple[str, str]) -> str:
    """Commands that stop at the first failing line, always.

    Each step is a command (one or more lines) or a `(name, command)` pair. The script runs under `set -e`
    at its top level (never inside `{ } ||` or `if`, where the shell silently switches it off), and after each
    step its status is checked once more, so a failing `a && b` ends it too. When it stops, it reports the
    step that failed as data ({"failed": name, "code": status}) and names the step's first line on stderr.
    """
    lines = ["set -e",
             "gw_step=start",
             # On any non-zero exit: the failed step as data on stdout, the same in words on stderr.
             "trap 'gw_rc=$?; if [ \"$gw_rc\" -ne 0 ]; then "
             f"printf \"{REPORT} {{\\\"failed\\\": \\\"%s\\\", \\\"code\\\": %d}}\\n\" \"$gw_step\" \"$gw_rc\"; "
             "printf \"failed (%s): %s\\n\" \"$gw_step\" \"$gw_line\" >&2; fi' EXIT"]
    for index, step in enumerate(steps):
        name, command = step if isinstance(step, tuple) else (f"step {index + 1}", step)
        if not command.strip():
            continue
        first = command.strip().splitlines()[0][:160]
        lines += [f"gw_step={q(_label(name))}; gw_line={q(first)}",
                  command,
                  'gw_rc=$?; [ "$gw_rc" -eq 0 ] || exit "$gw_rc"']
    return "\n".join(lines)


def _label(name: str) -> str:
    """A step name safe inside the JSON the EXIT trap prints."""
    return "".join(c for c in name if c.isalnum() or c in " -_.")[:60] or "step"


def with_env(env: dict[str, str], command: str) -> str:
    """`command` run with extra environment variables (e.g. an outbound proxy)."""
    if not env:
        return command
    return "env " + " ".join(q(f"{k}={v}") for k, v in sorted(env.items())) + f" sh -c {q(command)}"


def as_user(user: str, command: str) -> str:
    """`command` run by another local user, from a root shell (runuser needs no sudo configuration)."""
    return f"runuser -u {q(user)} -- sh -c {q(command)}"


def write_file(path: str, content: str | bytes, mode: str, owner: str, group: str) -> str:
    """Replace `path` atomically (temp file + rename), with mode and owner set before it appears; a failure
    on the way (a full disk) removes the temp file, so nothing half-written is left."""
    data = content.encode() if isinstance(content, str) else content
    encoded = base64.b64encode(data).decode()
    return (f"t=$(mktemp {q(path)}.gw-XXXXXX)\n"
            f"if printf %s {encoded} | base64 -d > \"$t\" && chown {q(owner)}:{q(group)} \"$t\" && "
            f"chmod {q(mode)} \"$t\"; then mv -f \"$t\" {q(path)}; else rm -f \"$t\"; exit 1; fi")


def ensure_directory(path: str, mode: str, owner: str, group: str) -> str:
    return join("install", "-d", "-m", mode, "-o", owner, "-g", group, path)


def symlink(path: str, target: str) -> str:
    """Point `path` at `target` atomically: a new link renamed over the old one."""
    return f"ln -sfn {q(target)} {q(path + '.gw-new')}\nmv -fT {q(path + '.gw-new')} {q(path)}"
