"""The shell a backup, a restore or maintenance mode runs on the server, built as plain strings (nothing here
runs). Every path and name is quoted here, through `tasks.commands.shell`; `tasks.cli.backups` runs them.

Backups are files in backups/ that only root reads (0600): `*.dump` (pg_dump's custom format, compressed) and
`*.media.tar.gz` (the media directory). A file is written under a `.part` name and renamed once complete.
"""

from __future__ import annotations

import re
from datetime import datetime

from . import shell
from .. import timestamps
from .database import Client
from ..layout import Layout
from .shell import join, q, report
from ..facts.backups import DUMP, MEDIA

# The kind of a backup, by how its name ends (after TIMESTAMP- or RELEASE-).
KINDS = (("-daily", "scheduled"), ("-manual", "by hand"), ("-before-migrate", "before a migration"),
         ("-before-reverse", "before reversing migrations"), ("-before-rollback", "before a rollback"),
         ("-before-restore", "before a restore"), ("-uploaded", "uploaded"))
# What a backup's name may be: what gangway writes, and nothing a shell or a path could misread.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")


def stamp(now: datetime | None = None) -> str:
    return timestamps.stamp(now)


def kind_of(name: str) -> str:
    """What a backup file is, in words: "database, scheduled", "media, by hand", ..."""
    what = "media" if name.endswith(MEDIA) else "database"
    base = name[:-len(MEDIA)] if name.endswith(MEDIA) else name[:-len(DUMP)] if name.endswith(DUMP) else name
    return what + next((f", {words}" for end, words in KINDS if base.endswith(end)), "")


def dump_name(name: str) -> str | None:
    """The file name of the dump the operator names ("X" or "X.dump"), or None when it cannot be one."""
    name = name if name.endswith(DUMP) else name + DUMP
    return name if NAME.fullmatch(name) else None


def media_archive(layout: Layout, name: str) -> str:
    """The media directory packed into backups/NAME.media.tar.gz, owner-only, renamed once complete."""
    path = f"{layout.backups}/{name}{MEDIA}"
    part = f"{path}.part"
    return "\n".join([
        f"if ! (umask 077 && {join('tar', '-czf', part, '-C', layout.shared, 'media')}); then "
        f"rm -f {q(part)}; exit 1; fi",
        join("mv", "-f", part, path),
        report(media=path),
    ])


REFUSED = ("the uploaded file is not a dump pg_restore can read (make one with fab backup --download, or "
           "pg_dump --format=custom); it was removed and is not kept as a backup")


def adopt_upload(layout: Layout, db: Client, upload: str, name: str) -> str:
    """An uploaded dump, checked to be one pg_restore reads whole (by postgres, not root: its table of contents,
    then every data block, written to nowhere), moved into backups/ as NAME.dump, root's alone. A dump it
    refuses is removed and never listed; the upload is gone either way."""
    path = f"{layout.backups}/{name}{DUMP}"
    part = f"{path}.part"
    reads = [f"{db.command('pg_restore', '--list', dumper=True, connect=False)} < {q(upload)}",
             f"{db.command('pg_restore', '--file=/dev/null', dumper=True, connect=False)} < {q(upload)}"]
    return "\n".join([
        *[f"if ! out=$({read} 2>&1 > /dev/null); then rm -f {q(upload)}; "
          f"printf '%s: %s\\n' {q(REFUSED)} \"$out\" >&2; exit 6; fi" for read in reads],
        f"if ! {{ chown root:root {q(upload)} && chmod 600 {q(upload)} && mv -f {q(upload)} {q(part)}; }}; then "
        f"rm -f {q(upload)} {q(part)}; exit 1; fi",
        join("mv", "-f", part, path),
        report(backup=path),
    ])


def remove_backup(layout: Layout, name: str) -> str:
    return join("rm", "-f", f"{layout.backups}/{name}")


def restore_database(layout: Layout, db: Client, dump: str) -> str:
    """pg_restore of `dump` into the app's database, as the app's role (which owns what it creates), in one
    transaction: it replaces everything the dump holds, or, on any error, nothing at all."""
    restore = db.command("pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
                         "--single-transaction", "--exit-on-error")
    path = q(layout.backups + '/' + dump)
    # How far pg_restore has read into the dump: the offset of the standard input it shares with the shell
    # that opened the file (gw_pid), and the dump's size.
    return shell.watched(f"{{ {restore}; }} < {path}",
                         f"printf '%s %s' \"$(awk '/^pos:/ {{print $2}}' /proc/\"$gw_pid\"/fdinfo/0 2>/dev/null)\" "
                         f"\"$(stat -c %s {path})\"")


def exists(layout: Layout, name: str) -> str:
    """Fails, saying so, unless backups/NAME is a backup file."""
    path = f"{layout.backups}/{name}"
    return (f"if [ ! -f {q(path)} ]; then printf '%s\\n' {q(f'there is no backup {name} in {layout.backups}/')} "
            ">&2; exit 7; fi")


def readable_copy(layout: Layout, name: str, user: str, copy: str) -> str:
    """A copy of backups/NAME that `user` (who downloads it) alone may read."""
    return join("install", "-m", "600", "-o", user, "-g", user, f"{layout.backups}/{name}", copy)


def maintenance_on(layout: Layout, who: str, when: str) -> str:
    return shell.write_file(layout.maintenance_flag, f"on since {when} by {who}\n", "644", "root", "root")


def maintenance_off(layout: Layout) -> str:
    return join("rm", "-f", layout.maintenance_flag)


def maintenance_read(layout: Layout) -> str:
    """The maintenance flag as it is now, read back after a change: reports {"maintenance": true|false}."""
    return (f"if [ -f {q(layout.maintenance_flag)} ]; then {report(maintenance=True)}; "
            f"else {report(maintenance=False)}; fi")

