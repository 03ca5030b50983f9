"""Every timestamp gangway writes or reads, in one place: the formats, and the clock they come from.

Two forms, both UTC: ISO 8601 for lines people read (the audit log, release metadata, the lock's holder) and a
compact stamp that sorts by time inside names (release ids, backup files). templates/backups/backup.py names its
dumps with the same compact stamp (a shipped program cannot import this module; a unit test keeps them equal).
"""

from __future__ import annotations

from datetime import datetime, timezone

ISO = "%Y-%m-%dT%H:%M:%SZ"   # 2026-11-24T05:12:03Z
STAMP = "%Y%m%dT%H%M%SZ"     # 20261124T051203Z, inside names


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def now() -> str:
    """The time now, as the audit log and release metadata write it."""
    return utc_now().strftime(ISO)


def stamp(when: datetime | None = None) -> str:
    """The compact form that names sort by."""
    return (when or utc_now()).strftime(STAMP)


def parse(text: str) -> int | None:
    """Unix seconds of either form (the compact one may be followed by more, as in a release id); None when
    the text is neither."""
    for length, form in ((20, ISO), (16, STAMP)):
        try:
            return int(datetime.strptime(text[:length], form).replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            continue
    return None


def age(seconds: float) -> str:
    """A duration as a person says it: 40 s, 12 min, 5 h, 3 days."""
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
