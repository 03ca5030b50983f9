"""Facts, then a difference, then commands: the model every provisioning step follows.

A `Probe` is a read-only shell command plus a pure parser of its output. An operation (`File`, `Directory`,
`Packages`, ...) names the probes it needs and, given their results, returns the `Change`s that would bring
the server to the wanted state, or none. A `Step` groups operations that belong together (a service's files
and the reload they need). Nothing in this module opens a connection: `tasks.session.runner` executes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..commands import shell
from ..commands.shell import q

Facts = dict[str, Any]


@dataclass(frozen=True)
class Probe:
    key: str
    command: str
    parse: Callable[[str, int], Any] = lambda out, rc: out.strip() if rc == 0 else None


def last_json(out: str, rc: int) -> Any:
    """What a probe program prints as one JSON line at its end; None when it failed or said nothing readable."""
    try:
        return json.loads(out.strip().splitlines()[-1]) if rc == 0 and out.strip() else None
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Change:
    what: str
    commands: tuple[str, ...]
    backup: str | None = None  # a path to restore if the step's validation fails


class Operation:
    """Wanted state of one thing on the server."""

    def probes(self) -> Sequence[Probe]:
        return ()

    def plan(self, facts: Facts) -> list[Change]:
        raise NotImplementedError


# --- probes -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PathState:
    kind: str  # "regular file", "directory", "symbolic link", ...
    mode: str
    owner: str
    group: str
    sha256: str | None = None
    target: str | None = None  # of a symbolic link


def parse_path_state(out: str, rc: int) -> PathState | None:
    lines = out.splitlines()
    if rc != 0 or not lines or lines[0] == "absent":
        return None
    kind, mode, owner, group = lines[0].split("|")
    extra = lines[1].strip() if len(lines) > 1 else None
    return PathState(kind=kind, mode=mode, owner=owner, group=group,
                     sha256=extra if kind.startswith("regular") else None,
                     target=extra if kind == "symbolic link" else None)


def path_probe(path: str) -> Probe:
    """Kind, mode, owner and content hash (or link target) of a path, without following a final link."""
    p = q(path)
    command = (f"if [ -e {p} ] || [ -L {p} ]; then stat -c '%F|%a|%U|%G' {p}; "
               f"if [ -L {p} ]; then readlink {p}; elif [ -f {p} ]; then sha256sum < {p} | cut -c1-64; fi; "
               f"else echo absent; fi")
    return Probe(f"path:{path}", command, parse_path_state)


def _mode(mode: str) -> str:
    return mode.lstrip("0") or "0"


# --- operations -----------------------------------------------------------------------------------------------

@dataclass
class File(Operation):
    """A file with exact content, mode and owner. `content` may depend on facts (e.g. is there a certificate?)."""
    path: str
    content: str | bytes | Callable[[Facts], str]
    mode: str = "644"
    owner: str = "root"
    group: str = "root"
    secret: bool = False  # a dry run never shows its content (nor that of a file other users may not read)

    def probes(self) -> Sequence[Probe]:
        return (path_probe(self.path),)

    @property
    def hidden(self) -> bool:
        """Whether a dry run may only say that the content differs, never show it."""
        return self.secret or not int(self.mode, 8) & 0o004

    def content_differs(self, facts: Facts) -> bool:
        state: PathState | None = facts[f"path:{self.path}"]
        return (state is None or not state.kind.startswith("regular")
                or state.sha256 != hashlib.sha256(self.wanted(facts)).hexdigest())

    def wanted(self, facts: Facts) -> bytes:
        content = self.content(facts) if callable(self.content) else self.content
        return content.encode() if isinstance(content, str) else content

    def plan(self, facts: Facts) -> list[Change]:
        state: PathState | None = facts[f"path:{self.path}"]
        if self.content_differs(facts):
            verb = "created" if state is None else "updated"
            write = shell.write_file(self.path, self.wanted(facts), self.mode, self.owner, self.group)
            return [Change(f"{self.path} {verb}", (write,), backup=self.path)]
        if _mode(state.mode) != _mode(self.mode) or (state.owner, state.group) != (self.owner, self.group):
            return [Change(f"{self.path} mode/owner fixed",
                           (f"chown {q(self.owner)}:{q(self.group)} {q(self.path)}",
                            f"chmod {self.mode} {q(self.path)}"))]
        return []


@dataclass
class FileIfAbsent(File):
    """A file created once and then owned by someone else (e.g. the deploy task rewrites it)."""

    def plan(self, facts: Facts) -> list[Change]:
        return super().plan(facts) if facts[f"path:{self.path}"] is None else []


@dataclass
class Directory(Operation):
    path: str
    mode: str = "755"
    owner: str = "root"
    group: str = "root"

    def probes(self) -> Sequence[Probe]:
        return (path_probe(self.path),)

    def plan(self, facts: Facts) -> list[Change]:
        state: PathState | None = facts[f"path:{self.path}"]
        if (state is not None and state.kind == "directory" and _mode(state.mode) == _mode(self.mode)
                and (state.owner, state.group) == (self.owner, self.group)):
            return []
        verb = "created" if state is None else "mode/owner fixed"
        return [Change(f"{self.path}/ {verb}", (shell.ensure_directory(self.path, self.mode, self.owner,
                                                                        self.group),))]


@dataclass
class Link(Operation):
    path: str
    target: str

    def probes(self) -> Sequence[Probe]:
        return (path_probe(self.path),)

    def plan(self, facts: Facts) -> list[Change]:
        state: PathState | None = facts[f"path:{self.path}"]
        if state is not None and state.kind == "symbolic link" and state.target == self.target:
            return []
        return [Change(f"{self.path} -> {self.target}", (shell.symlink(self.path, self.target),), backup=self.path)]


@dataclass
class Absent(Operation):
    path: str
    why: str = ""

    def probes(self) -> Sequence[Probe]:
        return (path_probe(self.path),)

    def plan(self, facts: Facts) -> list[Change]:
        if facts[f"path:{self.path}"] is None:
            return []
        return [Change(f"{self.path} removed" + (f" ({self.why})" if self.why else ""),
                       (f"rm -f {q(self.path)}",), backup=self.path)]


def _parse_installed(out: str, rc: int) -> set[str]:
    installed = set()
    for line in out.splitlines():
        name, _, status = line.partition("\t")
        if status.startswith("ii"):
            installed.add(name.split(":")[0])
    return installed


@dataclass
class Packages(Operation):
    """Debian packages installed; the package lists are refreshed only when something is missing."""
    names: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    key: str = "packages"  # the fact's name: each Packages of a provision needs its own

    def probes(self) -> Sequence[Probe]:
        return (Probe(self.key, "dpkg-query -W -f='${Package}\\t${db:Status-Abbrev}\\n' "
                      + " ".join(q(n) for n in self.names) + " 2>/dev/null; true", _parse_installed),)

    def plan(self, facts: Facts) -> list[Change]:
        missing = [n for n in self.names if n not in facts[self.key]]
        if not missing:
            return []
        apt = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Options::=--force-confold"
        return [Change(f"installed {' '.join(missing)}", (
            shell.with_env(self.env, "apt-get -q update"),
            shell.with_env(self.env, f"{apt} install --no-install-recommends " + " ".join(map(q, missing))),
        ))]


@dataclass
class Check(Operation):
    """Anything else: one probe and a function from its result to changes."""
    probe: Probe
    decide: Callable[[Any, Facts], list[Change]]

    def probes(self) -> Sequence[Probe]:
        return (self.probe,)

    def plan(self, facts: Facts) -> list[Change]:
        return self.decide(facts[self.probe.key], facts)


# --- steps ------------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    changes: list[Change]
    script: str | None  # None: nothing to do
    note: str = ""


@dataclass
class Step:
    """A titled group of operations, applied in one remote command.

    `validate` runs after the new files are in place; if it fails every file the step touched is restored
    and the step fails with the validator's output, so a broken config never replaces a working one.
    `after` runs once when anything changed (a reload). `before` runs locally before any change (e.g. prove
    that a new login works before closing the old way in); `confirm` runs locally after it, and if it raises,
    `undo` runs on the server. `note` explains an unchanged step in the recap, `changed_note` a changed one; `hint` helps when it fails.
    """
    title: str
    operations: Sequence[Operation]
    after: Sequence[str] = ()
    validate: str | None = None
    before: Callable[[], None] | None = None
    confirm: Callable[[], None] | None = None
    undo: str | None = None
    note: Callable[[Facts], str] | str = ""
    hint: str = ""
    changed_note: str = ""  # said after the changes, e.g. when they take effect
    extra_probes: Sequence[Probe] = ()

    def probes(self) -> list[Probe]:
        found = [p for op in self.operations for p in op.probes()] + list(self.extra_probes)
        return list({p.key: p for p in found}.values())

    def plan(self, facts: Facts) -> Plan:
        changes = [c for op in self.operations for c in op.plan(facts)]
        note = self.note(facts) if callable(self.note) else self.note
        if not changes:
            return Plan([], None, note)
        return Plan(changes, self.script(changes), note)

    def script(self, changes: list[Change]) -> str:
        commands = [c for change in changes for c in change.commands]
        if not self.validate:
            return shell.script(*commands, *self.after)
        backups = [c.backup for c in changes if c.backup]
        save = [f"if [ -e {q(p)} ] || [ -L {q(p)} ]; then cp -a {q(p)} \"$bk/{i}\"; fi" for i, p in enumerate(backups)]
        restore = "; ".join(f"rm -f {q(p)}; if [ -e \"$bk/{i}\" ] || [ -L \"$bk/{i}\" ]; then mv -f \"$bk/{i}\" {q(p)}; fi"
                            for i, p in enumerate(backups)) or "true"
        return shell.script(
            "bk=$(mktemp -d)",
            *save,
            *commands,
            f"if ! out=$({self.validate} 2>&1); then {restore}; rm -rf \"$bk\"; "
            "echo \"the new configuration was rejected and the previous one restored:\" >&2; "
            "echo \"$out\" >&2; exit 3; fi",
            "rm -rf \"$bk\"",
            *self.after,
        )
