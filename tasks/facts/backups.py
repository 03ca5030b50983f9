"""The backup files on the server, as data: one listing of backups/, read the same way by every task.

`fab backups` lists them all, `fab backup` reads the sizes of what it wrote, the deploy's state knows the
database dumps (to prune the old ones, and for `fab releases`), and `fab status` looks at the newest dump.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from ..commands.shell import q
from ..layout import Layout
from .steps import Probe

DUMP = ".dump"                 # pg_dump's custom format, compressed
MEDIA = ".media.tar.gz"        # the media directory
DAILY_SUFFIX = "-daily" + DUMP  # a scheduled backup's name: TIMESTAMP-daily.dump (templates/backups/backup.py)


def size_words(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def dump_progress(said: str) -> str:
    """How far a dump got, in words, from its progress line (the bytes written so far: commands.release.backup)."""
    return f"{size_words(int(said))} written so far" if said.isdigit() else ""


def restore_progress(said: str) -> str:
    """How far a restore got, from its progress line: how far pg_restore has read into the dump, and its size
    (commands.backup.restore_database)."""
    words = said.split()
    if len(words) != 2 or not all(word.isdigit() for word in words) or not int(words[1]):
        return ""
    done, total = min(int(words[0]), int(words[1])), int(words[1])
    return f"{size_words(done)} of the dump's {size_words(total)} restored ({100 * done // total} %)"


class BackupFile(NamedTuple):
    name: str
    size: int  # bytes
    age: int   # seconds since it was written, by the server's clock


def listing_command(layout: Layout) -> str:
    """Every complete backup file (a `.part` is not one), a line each: name, bytes, when written, the time now."""
    return (f"cd {q(layout.backups)} && now=$(date +%s) && find . -maxdepth 1 -type f "
            f"\\( -name '*{DUMP}' -o -name '*{MEDIA}' \\) -printf \"%f\\t%s\\t%T@\\t$now\\n\"")


def parse_listing(out: str, rc: int = 0) -> list[BackupFile] | None:
    """The files of `listing_command`'s output, oldest first; None when backups/ could not be listed (never
    "no backups")."""
    if rc != 0:
        return None
    rows = []
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) == 4:
            try:
                name, size, written, now = fields[0], int(fields[1]), float(fields[2]), int(fields[3])
            except ValueError:
                continue
            rows.append((written, BackupFile(name, size, max(now - int(written), 0))))
    return [file for _, file in sorted(rows)]


def listing_probe(layout: Layout, key: str = "backup_files",
                  pick: Callable[[list[BackupFile]], object] | None = None) -> Probe:
    """The listing as a fact under `key` (None when it could not be read); `pick` makes of the files what the
    caller keeps (all of them)."""
    if pick is None:
        return Probe(key, listing_command(layout), parse_listing)
    return Probe(key, listing_command(layout),
                 lambda out, rc: None if (files := parse_listing(out, rc)) is None else pick(files))


def dumps(files: list[BackupFile]) -> list[BackupFile]:
    """The database dumps among `files` that hold something, in the listing's order."""
    return [file for file in files if file.name.endswith(DUMP) and file.size > 0]


def newest_dump(files: list[BackupFile]) -> BackupFile | None:
    found = dumps(files)
    return found[-1] if found else None


def scheduled(name: str) -> bool:
    """A dump the backup timer wrote: its own retention prunes it, never a deploy."""
    return name.endswith(DAILY_SUFFIX)
