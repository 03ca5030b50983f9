"""A fake server for the orchestration tier: it answers the session's commands from a script the test
writes, so every failure branch of a task can be reached in milliseconds, without a server.

The fake knows the shape of what gangway sends, not what it means:
- `gather(probes)` answers each probe from `facts` (already parsed values, keyed like the probes), and a test
  can queue different answers for later reads (`then_facts`), e.g. the migrations after a reversal;
- `run(script)` finds the named steps of a `tasks.commands.shell.script` (its `gw_step=` lines) and answers with the
  first rule whose step name matches: success with a report (the `@gangway {...}` lines a step prints), or a
  failure of that step with its output; a script with no steps (the unlock script) gets the answer a test
  gave for a text it contains (`reply`); other unmatched scripts succeed with no report;
- a rule may stand for Ctrl-C instead (`interrupt=True`): the script is recorded, then KeyboardInterrupt is raised,
  as the session sees it when the operator presses Ctrl-C while that step runs; `interrupt_reads` does the same
  for a gather of one of its keys;
- `start` (the deploy lock's holder) answers "acquired"; `put` stores the bytes, or raises what a test asks;
  an attached command (`fab manage`) prints and exits as `attached_answer` says.

Every script, probe read and upload is recorded, so a test can assert what was, and was not, sent.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace

from tasks.commands import shell
from tasks.connection.remote import RemoteError, Result, Stats

STEP = re.compile(r"^gw_step='?([^'\n;]*)'?;", re.M)


def steps_of(script: str) -> list[str]:
    """The step names of a tasks.commands.shell.script, in order (the script's own preamble, `gw_step=start` with no `;`,
    is not one; a deploy's step named "start", which starts the release, is)."""
    return STEP.findall(script)


@dataclass
class Rule:
    step: str
    ok: bool = True
    report: dict = field(default_factory=dict)
    output: str = ""
    times: int | None = None  # how many scripts it answers; None: all
    interrupt: bool = False  # Ctrl-C while this step runs


class FakeChannel:
    def __init__(self, first_line: str = "acquired"):
        self.closed = False
        self._first = first_line

    def makefile(self, mode="r"):
        return io.StringIO(self._first + "\n")

    def exit_status_ready(self):
        return False

    def shutdown_write(self):
        pass

    def close(self):
        self.closed = True


class FakeRemote:
    def __init__(self, facts: dict | None = None, host: str = "10.0.0.2"):
        self.facts = dict(facts or {})
        self.queued: list[dict] = []
        self.rules: list[Rule] = []
        self.replies: list[tuple[str, Result]] = []
        self.scripts: list[str] = []
        self.reads: list[list[str]] = []
        self.uploads: dict[str, bytes] = {}
        self.put_error: BaseException | None = None
        self.interrupt_reads: set[str] = set()
        self.lock_answer = "acquired"
        self.attached_answer = Result("", "", 0)
        self.stats = Stats()
        self.connection = SimpleNamespace(host=host, user="deploy", transport=SimpleNamespace(is_active=lambda: True))
        self.user = "deploy"
        self.wrap = None
        self.echo = None

    # --- what a test sets up ---------------------------------------------------------------------------------
    def on(self, step: str, ok: bool = True, report: dict | None = None, output: str = "",
           times: int | None = None, interrupt: bool = False) -> "FakeRemote":
        """Answer scripts that contain `step` (the newest matching rule wins); `interrupt`: Ctrl-C there."""
        self.rules.insert(0, Rule(step, ok, report or {}, output, times, interrupt))
        return self

    def reply(self, contains: str, stdout: str, code: int = 0) -> "FakeRemote":
        """Answer a script without named steps that contains `contains` (the newest matching reply wins)."""
        self.replies.insert(0, (contains, Result(stdout, "", code)))
        return self

    def then_facts(self, **changes) -> "FakeRemote":
        """The next gather after the current one sees these facts changed (queued in order)."""
        self.queued.append(changes)
        return self

    # --- what the session calls ------------------------------------------------------------------------------
    def gather(self, probes) -> dict:
        probes = list(probes)
        self.reads.append([p.key for p in probes])
        if self.interrupt_reads & {p.key for p in probes}:
            raise KeyboardInterrupt
        answer = {p.key: self.facts.get(p.key) for p in probes}
        if self.queued:
            self.facts.update(self.queued.pop(0))
        return answer

    def run(self, command: str, *, as_root: bool = True, timeout: int | None = None, echo: bool = True,
            progress=None) -> Result:
        self.scripts.append(command)
        names = steps_of(command)
        if not names:
            reply = next((r for text, r in self.replies if text in command), None)
            if reply is not None:
                return reply
        reports, outputs = {}, []
        for name in names:
            rule = next((r for r in self.rules if r.step == name and r.times != 0), None)
            if rule is None:
                continue
            if rule.times:
                rule.times -= 1
            if rule.interrupt:
                raise KeyboardInterrupt
            reports.update(rule.report)
            outputs.append(rule.output)
            if not rule.ok:
                reports.update({"failed": name, "code": 1})
                stdout = "".join(f"{shell.REPORT} {json.dumps({k: v})}\n" for k, v in reports.items())
                return Result(stdout, "\n".join(outputs + [f"failed ({name}): ..."]), 1)
        stdout = "".join(f"{shell.REPORT} {json.dumps({k: v})}\n" for k, v in reports.items())
        return Result(stdout + "\n".join(outputs), "", 0)

    def start(self, command: str, timeout: float = 30) -> FakeChannel:
        self.scripts.append(command)
        return FakeChannel(self.lock_answer)

    def put(self, data: bytes, path: str) -> None:
        if self.put_error:
            raise self.put_error
        self.uploads[path] = data

    def get(self, path: str, local: str) -> None:
        raise RemoteError("the fake server has no files to download")

    def attached(self, command: str, terminal: bool) -> int:
        return self.attached_result(command, terminal).code

    def attached_result(self, command: str, terminal: bool) -> Result:
        """An attached command (`fab manage`, `fab logs`): it prints and exits as `attached_answer` says."""
        self.scripts.append(command)
        return self.attached_answer

    def close(self) -> None:
        pass

    # --- what a test asserts ---------------------------------------------------------------------------------
    def ran(self, step: str) -> bool:
        return any(step in steps_of(s) for s in self.scripts)

    def sent(self, text: str) -> bool:
        return any(text in s for s in self.scripts)


class StepRemote:
    """A server for one provision step's apply: gathers answered from `facts`; a script that holds `fails_on`
    fails with `refusal` (exit `code`) while a refusal is set (a database or a store refusing the app's key)."""

    class connection:
        host = "10.0.0.2"

    def __init__(self, facts: dict, refusal: str = "", fails_on: str = "", code: int = 1):
        self.facts, self.refusal, self.fails_on, self.code, self.scripts = facts, refusal, fails_on, code, []

    def gather(self, probes) -> dict:
        return {p.key: self.facts.get(p.key) for p in probes}

    def run(self, script: str, progress=None) -> Result:
        self.scripts.append(script)
        if self.refusal and self.fails_on in script:
            return Result("", self.refusal, self.code)
        return Result("", "", 0)


# --- a server to start from ----------------------------------------------------------------------------------

def release(release_id: str, migrations=(), status: str = "good", requirements: str = "req1"):
    from tasks.facts.releases import Release
    return Release(id=release_id, commit=release_id.split("-")[1] + "000", ref="main", created="2026-12-01T00:00:00Z",
                   deployed_by="ada@laptop", requirements=requirements, status=status, migrations=list(migrations))


def server(*releases_, live: str | None = None, running=None, applied=(), history=(), backups=(),
           maintenance=False, free=(10_000_000, 10_000_000), failed=(), layout=None, inventory=None,
           uv=(0, 13, 9)) -> dict:
    """The parsed facts of a provisioned server holding `releases_` (tasks.session.run.server_probes' keys),
    provisioned with `inventory` (default: `default_inventory()`); `uv`: the version `uv --version` says (None:
    no uv, a server provisioned before gangway built with it)."""
    from tasks.commands import release as commands
    from tasks.provisioning import processes, served
    from tasks.layout import Layout
    layout = layout or Layout("mysite")
    live = live if live is not None else (releases_[-1].id if releases_ else None)
    return {
        "releases": "".join(f"{r.id}\t{r.to_json().replace(chr(10), str())}\n" for r in releases_),
        "failed": list(failed),
        "live": live,
        "backend": commands.backend_conf(layout),
        "running": list(running if running is not None else ([live] if live else [])),
        # systemctl is-active of the live release's instance (commands.unit_state_probe)
        "unit_state": "active" if live and live in (running if running is not None else [live]) else "inactive",
        "history": "".join(json.dumps(e) + "\n" for e in history),
        "venvs": sorted({r.requirements for r in releases_}),
        "python": "3.13.5",
        "provisioned": True,
        "applied": None if applied is None else list(applied),
        "backups": list(backups),
        "free": list(free),
        "maintenance": maintenance,
        "job_files": {},
        "env_sizes": {"env": {}, "managed": [], "config": {}, "arg_max": 2 * 1024 * 1024},
        "served_files": served.as_provisioned(inventory or default_inventory()),
        "process_files": processes.as_provisioned(inventory or default_inventory()),
        "process_units": {},
        "uv": uv,
    }


def default_inventory():
    from tasks.inventory import App, Host, Inventory
    return Inventory(App("mysite"), (Host("10.0.0.2"),))


def session(remote: FakeRemote, inventory=None, out: io.StringIO | None = None):
    """A tasks.session.run.Session on the fake server, its output in `out` (plain text)."""
    from tasks.session.runner import Reporter
    from tasks.session.run import Session
    inventory = inventory or default_inventory()
    return Session(inventory, inventory.hosts[0], remote, Reporter(out if out is not None else io.StringIO(),
                                                                   terminal=False))


def an_archive(files: dict[str, str] | None = None) -> bytes:
    """A project's archive as `git archive` packs it: manage.py and `files` (path -> text), padded to 1 KiB."""
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in {"manage.py": "#" * 1024, **(files or {})}.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def a_source(commit: str = "abcdef1234567890", requirements: bytes = b"django\n", files: dict[str, str] | None = None):
    """The project as read from git: `files` (path -> text) beside its manage.py."""
    from tasks.project.source import Source
    return Source(commit=commit, ref="main", dirty=False, archive=an_archive(files), requirements=requirements)
