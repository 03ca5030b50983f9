"""Building remote shell commands as plain strings: quoting in one place, nothing here runs anything."""

from __future__ import annotations

import base64
import shlex

q = shlex.quote


def join(*tokens: str) -> str:
    """A command from tokens, each quoted: join("rm", "-f", path)."""
    return shlex.join(tokens)


def script(*commands: str) -> str:
    """Commands that stop at the first failure, naming it.

    `set -e` alone would miss a failure early in an `a && b` chain; each command is therefore checked
    explicitly, and the first one that fails ends the script with its exit status.
    """
    lines = ["set -e"]
    for command in commands:
        first = command.strip().splitlines()[0][:160] if command.strip() else command
        lines.append(f"{{ {command}\n}} || {{ s=$?; echo {q('failed: ' + first)} >&2; exit $s; }}")
    return "\n".join(lines)


def with_env(env: dict[str, str], command: str) -> str:
    """`command` run with extra environment variables (e.g. an outbound proxy)."""
    if not env:
        return command
    return "env " + " ".join(q(f"{k}={v}") for k, v in sorted(env.items())) + f" sh -c {q(command)}"


def as_user(user: str, command: str) -> str:
    """`command` run by another local user, from a root shell (runuser needs no sudo configuration)."""
    return f"runuser -u {q(user)} -- sh -c {q(command)}"


def write_file(path: str, content: str | bytes, mode: str, owner: str, group: str) -> str:
    """Replace `path` atomically (temp file + rename), with mode and owner set before it appears."""
    data = content.encode() if isinstance(content, str) else content
    encoded = base64.b64encode(data).decode()
    return (f"t=$(mktemp {q(path)}.gw-XXXXXX) && printf %s {encoded} | base64 -d > \"$t\" && "
            f"chown {q(owner)}:{q(group)} \"$t\" && chmod {mode} \"$t\" && mv -f \"$t\" {q(path)}")


def ensure_directory(path: str, mode: str, owner: str, group: str) -> str:
    return f"install -d -m {mode} -o {q(owner)} -g {q(group)} {q(path)}"


def symlink(path: str, target: str) -> str:
    """Point `path` at `target` atomically: a new link renamed over the old one."""
    return f"ln -sfn {q(target)} {q(path)}.gw-new && mv -fT {q(path)}.gw-new {q(path)}"
