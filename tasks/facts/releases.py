"""Releases as data: ids, what the server says about them, which to keep, which migrations stand between two.

Pure functions only; `tasks.cli.deploy` gathers the facts and runs the scripts built from these answers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime

from .. import timestamps
from .backups import BackupFile, scheduled

RELEASE_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{7,12}(-dirty)?$")

# A release's status, in .gangway/release.json.
BUILDING = "building"  # being built; left behind only by an interrupted deploy
GOOD = "good"          # passed its health check and went live at least once
FAILED = "failed"      # moved to failed/ for inspection


def new_release_id(commit: str, dirty: bool = False, now: datetime | None = None) -> str:
    """Sorts by time and names the commit: 20261124T051203Z-1a2b3c4."""
    return f"{timestamps.stamp(now)}-{commit[:7]}" + ("-dirty" if dirty else "")


@dataclass
class Release:
    id: str
    status: str = BUILDING
    commit: str = ""
    ref: str = ""
    created: str = ""
    deployed_by: str = ""
    requirements: str = ""  # hash of the requirements: the name of its venv
    # Every migration its code knows, "app.name", in plan order: the names its squashed migrations replace
    # included (Django records them too), and which squashed migration replaces which.
    migrations: list[str] = field(default_factory=list)
    replaces: dict[str, list[str]] = field(default_factory=dict)
    static_sample: dict = field(default_factory=dict)  # {"file": relative path, "url": URL path}: fetched at a switch
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Release":
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class ServerState:
    """What the server says about the app's releases, gathered in one round trip."""
    releases: dict[str, Release]      # in releases/, by id
    failed: list[str]                 # ids in failed/, oldest first
    live: str | None                  # the release nginx sends traffic to
    running: list[str]                # release ids whose Gunicorn unit is active
    history: list[dict]               # the audit log, oldest first
    venvs: list[str]                  # requirement hashes with a built venv
    python: str = ""                  # the server's python3 version
    applied: list[str] | None = field(default_factory=list)  # migrations applied, in order; None: unreadable
    backups: list[BackupFile] | None = field(default_factory=list)  # the database dumps, oldest first;
    # None: backups/ could not be listed
    free_kib: list[int] = field(default_factory=list)  # free space where releases/ and venvs/ live
    backend: str = ""                 # nginx's backend include as it is on the server
    maintenance: bool = False         # the maintenance flag is set: nginx answers 503 to everyone
    job_files: dict[str, str] = field(default_factory=dict)  # scheduled jobs' unit files: {name: sha256}
    served_files: dict | None = None  # unit, Gunicorn config, nginx site: {path: {sha256, lines}} (provisioning.served)
    env_sizes: dict | None = None     # the environment files' names and value sizes (tasks.facts.envsize)
    process_files: dict[str, str] | None = field(default_factory=dict)  # process types' template files:
    # {name: sha256} (provisioning.processes); None: could not be listed
    process_units: dict[str, str] | None = field(default_factory=dict)  # loaded APP-*@R units: {unit: ActiveState}
    uv: tuple[int, ...] | None = None  # the version of the uv that builds venvs (provisioning.uv); None: none runs

    def previous_good(self) -> str | None:
        """The release that was live before the live one, if it still exists and is good."""
        seen_live = False
        abandoned = self.rolled_back()
        for event in reversed(self.history):
            if event.get("event") not in ("live", "rollback"):
                continue
            release = event.get("release")
            if release == self.live and not seen_live:
                seen_live = True
                continue
            if seen_live and release != self.live and release not in abandoned and self._good(release):
                return release
        # No usable history (an old server, a truncated log): the newest good release before the live one.
        candidates = [r for r in self.good_ids() if (self.live is None or r < self.live) and r not in abandoned]
        return candidates[-1] if candidates else None

    def rolled_back(self) -> set[str]:
        """Releases a rollback moved away from: not a "previous" to go back to, unless asked by name."""
        return {e.get("from") for e in self.history if e.get("event") == "rollback"} - {None, self.live}

    def good_ids(self) -> list[str]:
        return sorted(r for r, rel in self.releases.items() if rel.status == GOOD)

    def _good(self, release: str | None) -> bool:
        return bool(release and release in self.releases and self.releases[release].status == GOOD)

    def after_deploy(self, release: Release) -> "ServerState":
        """The state once `release` is live and the unfinished leftovers are gone (the deploy removed them):
        known without asking the server again."""
        kept = {r: rel for r, rel in self.releases.items() if r not in self.unfinished()}
        return replace(self, releases={**kept, release.id: release}, live=release.id,
                       venvs=sorted({*self.venvs, release.requirements}))

    def after_switch(self, release: Release, event: dict) -> "ServerState":
        """The state once `release` is live by `event` (its history line): what a rollback would go to then
        (`previous_good`) is known before the switch runs, so the switch keeps that one warm."""
        return replace(self, releases={**self.releases, release.id: release}, live=release.id,
                       history=[*self.history, event])

    def schema_ahead(self) -> list[str]:
        """Migrations the database has applied that the live release's code does not know."""
        live = self.releases.get(self.live or "")
        if live is None or not live.migrations or self.applied is None:
            return []
        return migrations_to_reverse(self.applied, live)

    def schema_behind(self) -> list[str]:
        """Migrations the live release's code has that the database has not applied."""
        live = self.releases.get(self.live or "")
        if live is None or self.applied is None:
            return []
        return migrations_missing(self.applied, live)

    def unfinished(self) -> list[str]:
        """Releases an interrupted deploy left behind: never live, never finished."""
        return sorted(r for r, rel in self.releases.items() if rel.status != GOOD and r != self.live)


def parse_history(text: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: the rest of the log still counts
    return events


def parse_releases(text: str) -> dict[str, Release]:
    """`ID<TAB>JSON` lines; a release whose metadata is missing or broken counts as unfinished."""
    releases = {}
    for line in text.splitlines():
        release_id, _, meta = line.partition("\t")
        if not RELEASE_ID.match(release_id):
            continue
        try:
            releases[release_id] = Release.from_json(meta)
            releases[release_id].id = release_id
        except (json.JSONDecodeError, TypeError):
            releases[release_id] = Release(release_id)
    return releases


def to_prune(state: ServerState, keep: int, new_live: str, previous: str | None) -> list[str]:
    """Good releases beyond the newest `keep`; the live one and the previous one are never among them."""
    protected = {new_live, previous} - {None}
    good = [r for r in state.good_ids() if r not in protected]
    room = max(keep - len(protected), 0)
    return good[:-room] if room else good


def failed_to_prune(failed: list[str], keep: int) -> list[str]:
    """Failed releases beyond the newest `keep`."""
    return sorted(failed)[:max(len(failed) - keep, 0)]


def backups_to_prune(backups: list[BackupFile] | None, keep: int) -> list[str]:
    """Database dumps beyond the newest `keep` (`backups` is oldest first, as listed), as file names; the
    scheduled ones (*-daily.dump) are not among them: their own retention prunes them. None when the dumps
    could not be listed: nothing is pruned."""
    pruned = [file.name for file in backups or [] if not scheduled(file.name)]
    return pruned[:max(len(pruned) - keep, 0)]


def venvs_to_prune(state: ServerState, kept_releases: list[str]) -> list[str]:
    """Venvs no kept release uses."""
    used = {state.releases[r].requirements for r in kept_releases if r in state.releases}
    return [v for v in state.venvs if v not in used]


def known_names(release: Release) -> set[str]:
    """Every name `release`'s code knows as django_migrations records it: its migrations, and the names its
    squashed migrations replace (also for metadata written before they were listed among its migrations)."""
    return {*release.migrations, *(name for names in release.replaces.values() for name in names)}


def migrations_to_reverse(applied: list[str], target: Release) -> list[str]:
    """Migrations applied in the database that the target release's code does not know, in applied order."""
    known = known_names(target)
    return [m for m in applied if m not in known]


def migrations_missing(applied: list[str], release: Release) -> list[str]:
    """Migrations `release`'s code has that the database lacks, as `showmigrations` counts them: a squashed
    migration counts as applied once all it replaces are, and a replaced one once its squashed one is."""
    done = set(applied)
    squash_of = {name: squash for squash, names in release.replaces.items() for name in names}
    missing = []
    for name in release.migrations:
        if name in done or squash_of.get(name) in done:
            continue
        if name in release.replaces and all(r in done for r in release.replaces[name]):
            continue
        missing.append(name)
    return missing
