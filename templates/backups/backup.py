#!/usr/bin/python3
"""The scheduled database backup of one app, run by systemd (APP-backup.service) as root.

It runs the dump command COMMAND_FILE holds (a JSON list: pg_dump's custom format, compressed, as gangway's
provision wrote it for the app's database, local or not) into BACKUPS/NAME.part, owner-only,
renames it to TIMESTAMP-daily.dump once complete, then prunes the scheduled dumps the retention rule no longer
keeps: the newest dump of each of the last KEEP_DAILY days that have one, and the newest of each of the last
KEEP_WEEKLY ISO weeks. Dumps taken before migrations and by hand are not touched here (`fab deploy` prunes them).

    backup.py COMMAND_FILE BACKUPS KEEP_DAILY KEEP_WEEKLY

`keep` is the retention rule as a pure function; gangway's tests import it from this file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

SUFFIX = "-daily.dump"
STAMP = "%Y%m%dT%H%M%SZ"
NAME = re.compile(r"(\d{8}T\d{6}Z)" + re.escape(SUFFIX))


def stamp_of(name: str) -> datetime | None:
    match = NAME.fullmatch(name)
    if not match:
        return None
    try:
        return datetime.strptime(match[1], STAMP)
    except ValueError:
        return None


def keep(names: list[str], keep_daily: int, keep_weekly: int) -> set[str]:
    """Which scheduled dumps to keep: the newest of each of the newest `keep_daily` days, and the newest of each
    of the newest `keep_weekly` ISO weeks. Names that are not scheduled dumps are always kept."""
    dated = sorted(((stamp_of(n), n) for n in names if stamp_of(n)), reverse=True)
    kept = {n for n in names if not stamp_of(n)}
    for period, count in ((lambda t: t.date(), keep_daily), (lambda t: t.isocalendar()[:2], keep_weekly)):
        seen = []
        for when, name in dated:
            key = period(when)
            if key in seen:
                continue
            if len(seen) == count:
                break
            seen.append(key)
            kept.add(name)
    return kept


def main(command_file: str, backups: str, keep_daily: int, keep_weekly: int) -> int:
    with open(command_file) as f:
        command = json.load(f)
    name = datetime.now(timezone.utc).strftime(STAMP) + SUFFIX
    path = os.path.join(backups, name)
    part = path + ".part"
    os.umask(0o077)
    for stale in os.listdir(backups):  # what a run that was killed left: nothing else writes these
        if stale.endswith(SUFFIX + ".part"):
            os.remove(os.path.join(backups, stale))
    with open(part, "wb") as out:
        dump = subprocess.run(command, stdout=out, cwd="/")
    if dump.returncode != 0:
        os.remove(part)
        print(f"pg_dump failed (exit {dump.returncode}); no backup was kept", file=sys.stderr)
        return 1
    os.replace(part, path)
    print(f"backup {path}: {os.path.getsize(path)} bytes")
    names = os.listdir(backups)
    for old in sorted(set(names) - keep(names, keep_daily, keep_weekly)):
        os.remove(os.path.join(backups, old))
        print(f"pruned {old}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
