"""Sending a file from the operator's machine to the server: the one upload that `fab restore --upload`,
`fab config`, `fab manage --file` and `fab import-data` use.

The file is written under a temporary name (NAME.part, owner-only from its first byte) and renamed when
complete, so nothing ever reads half a file. On any failure the partial file is removed, and a full disk is
named with the free space. A connection cut half-way leaves a .part behind: the next upload removes it (and
complete uploads nobody removed, after a while; see release_commands.stale_uploads).
"""

from __future__ import annotations

import re
import secrets

from ..commands import release as commands, shell
from ..connection.remote import ConnectionLost, RemoteError
from .run import DeployError, Session

MIB = 1024 * 1024


def _free(stdout: str) -> int | None:
    free = shell.parse_reports(stdout).get("free_kib")
    return free if isinstance(free, int) else None


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def disk_full(session: Session, what: str, size: int, free_kib: int | None, nothing: str) -> DeployError:
    """A full disk, named with the free space and what the upload needs (the file, and the spare a run keeps:
    a small file is refused with more than its size free), as deploys name it."""
    free = f"{free_kib / 1024:.1f} MiB free in {session.layout.releases}/" if free_kib is not None else \
        "free space unknown"
    need = size + commands.LOW_SPACE_KIB * 1024
    return DeployError(f"not enough disk space on {session.host.address} for {what}: it needs about "
                       f"{need / MIB:.1f} MiB (the file's {_size(size)}, and {commands.LOW_SPACE_KIB // 1024} MiB "
                       f"kept spare), {free}. Free some space (old database dumps in {session.layout.backups}/, "
                       "`sudo apt-get clean`, `sudo journalctl --vacuum-size=100M`) and run it again; the partial "
                       f"upload was removed, {nothing}")


def send_file(session: Session, data: bytes, name: str, nothing: str = "nothing was changed") -> str:
    """Upload `data` to a file only the logged-in user can read (then root): the path on the server, complete.
    Raises DeployError (ending with `nothing`, what the caller leaves as it was) when it cannot."""
    layout, remote = session.layout, session.remote
    path = layout.upload(secrets.token_hex(6), re.sub(r"[^A-Za-z0-9._-]", "_", name)[-80:])
    part = path + commands.UPLOAD_PART
    what = f"the upload of {name}"
    started = remote.run(commands.upload_start(layout, part), as_root=False)
    if not started.ok:
        raise DeployError(f"cannot create {part} for {what}:\n{started.tail()}\n{nothing[:1].upper()}{nothing[1:]}.")
    free = _free(started.stdout)
    if free is not None and free * 1024 < len(data) + commands.LOW_SPACE_KIB * 1024:
        remote.run(commands.upload_abort(layout, part), as_root=False)
        raise disk_full(session, what, len(data), free, nothing)
    try:
        remote.put(data, part)
    except ConnectionLost:
        raise  # the next upload removes the .part (release_commands.stale_uploads)
    except (RemoteError, KeyboardInterrupt) as error:
        try:
            aborted = remote.run(commands.upload_abort(layout, part), as_root=False)
        except (RemoteError, KeyboardInterrupt):
            raise error from None
        if isinstance(error, KeyboardInterrupt):
            raise
        free = _free(aborted.stdout)
        if free is not None and free * 1024 < len(data) + commands.LOW_SPACE_KIB * 1024 or \
                any(sign in str(error) for sign in commands.DISK_FULL_SIGNS + ("size mismatch",)):
            raise disk_full(session, what, len(data), free, nothing) from None
        raise DeployError(f"{error}; the partial upload was removed, {nothing}") from None
    finished = remote.run(commands.upload_finish(part, path), as_root=False)
    if not finished.ok:
        remote.run(commands.upload_abort(layout, part), as_root=False)
        raise DeployError(f"cannot complete {what} ({finished.tail()}); the partial upload was removed, {nothing}")
    return path
