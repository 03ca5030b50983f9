"""The session layer: run one task on each selected host, the same way for every task.

A task module holds its own steps; this module holds what every task shares:
- choosing the hosts (Fabric's -H, or the inventory) and logging in to each;
- the deploy lock, for the tasks that declare one (one run that changes a server at a time), and the line
  each such task leaves in the server's audit log (`state/history.log`), success or failure;
- one exit path: a failure becomes one clear `TASK failed on HOST: why` line and exit code 1, Ctrl-C becomes
  `TASK interrupted on HOST: what it left` and exit code 130, whatever the task;
- `-v`: every remote command printed as it runs, for every task;
- per-host results as data (`HostResult`), for the caller to summarise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from invoke.exceptions import Exit

from ..facts import envsize, releases
from ..commands import release as commands
from ..project import source
from ..connection import targets
from .. import timestamps
from ..inventory import Host, Inventory, InventoryError
from ..layout import Layout
from .lock import DeployLock, LockLost, who
from ..provisioning import jobs, processes, served
from ..commands import processes as process_commands
from ..commands.database import Client, client as database_client
from ..facts.releases import ServerState
from ..connection.remote import ConnectionLost, Remote, RemoteError, Stats
from .runner import Reporter


class DeployError(RemoteError):
    """A task that stopped on purpose, with a message that says what is true on the server now."""


def server_probes(layout: Layout, db: Client) -> list:
    """What a deploy, a rollback and `fab status` read of the server in their first round trip."""
    return [*commands.state_probes(layout, db), jobs.files_probe(layout), served.probe(layout), envsize.probe(layout),
            processes.files_probe(layout), process_commands.units_probe(layout)]


def server_state(facts: dict) -> ServerState:
    """The ServerState in the facts `commands.state_probes` gathered."""
    return ServerState(releases=releases.parse_releases(facts["releases"]), failed=sorted(facts["failed"]),
                       live=facts["live"], running=facts["running"],
                       history=releases.parse_history(facts["history"]), venvs=facts["venvs"],
                       python=facts["python"], applied=facts["applied"], backups=facts["backups"],
                       free_kib=facts["free"], backend=facts["backend"] or "",
                       maintenance=facts["maintenance"], job_files=facts["job_files"],
                       served_files=facts.get("served_files"), env_sizes=facts.get("env_sizes"),
                       process_files=facts.get("process_files", {}), process_units=facts.get("process_units", {}))


def last_lines(text: str, lines: int = 30) -> str:
    """The end of a command's output, as a message quotes it (Django's gate output without its noise)."""
    from ..project import diagnose
    return "\n".join(diagnose.gate_output(text)[-lines:])


@dataclass
class Session:
    """One server, logged in, with what a task needs to talk about it."""
    inventory: Inventory
    host: Host
    remote: Remote
    reporter: Reporter

    @property
    def stats(self) -> Stats:
        return self.remote.stats

    @property
    def layout(self) -> Layout:
        return Layout(self.inventory.app.name)

    @property
    def app(self) -> str:
        return self.inventory.app.name

    @property
    def database(self) -> Client:
        return database_client(self.inventory, self.host)

    def state(self) -> ServerState:
        facts = self.remote.gather(server_probes(self.layout, self.database))
        if not facts["provisioned"]:
            raise DeployError(f"{self.host.address} is not provisioned for {self.app} by this version of gangway: "
                              "run `fab provision` first")
        return server_state(facts)

    def run(self, *steps: str | tuple[str, str], lines: int = 60) -> tuple[bool, dict, str]:
        """Run a script of named steps: (ok, its report, the last `lines` lines of its output). A step that takes
        long (pip installing the requirements) says it is still running."""
        from ..commands import shell
        first = steps[0][0] if steps and isinstance(steps[0], tuple) else "remote script"
        with self.reporter.running(first):
            result = self.remote.run(shell.script(*steps))
        return result.ok, shell.parse_reports(result.stdout), result.tail(lines)

    def health_host(self) -> str:
        return self.inventory.app.domains[0] if self.inventory.app.domains else self.host.address

    def audit(self, event: str, result: str, detail: str = "") -> None:
        """One line in the server's audit log: what ran, by whom, and how it ended."""
        line = {"time": timestamps.now(), "event": event, "by": who(), "result": result}
        if detail:
            line["detail"] = detail[:300]
        self.remote.run(commands.history(self.layout, line), echo=False)


@dataclass
class HostResult:
    """How a task ended on one host: its return value, or the message it failed with."""
    host: str
    ok: bool
    value: Any = None
    error: str = ""


@dataclass
class Task:
    """What a task declares to the session layer.

    `lock`: the deploy lock's description while the task runs (None: the task takes no lock, it only reads);
    a callable gets the session, for tasks whose need depends on the server. `audit`: the event name of its
    audit line (default: the task's name) when it holds the lock. `interrupted`: what Ctrl-C leaves behind,
    said after "TASK interrupted on HOST". `before`: runs once, before any connection (local checks that
    should fail fast). `recap`: the session prints the closing line after each host's run (commands, SSH
    connections, seconds: `Stats.summary`), on stderr, so a task whose output is data (`fab manage --
    dumpdata > posts.json`, `fab logs | grep`) keeps its stdout clean; False for the tasks that print their own
    (deploy, rollback, provision). `hosts`: which of the selected hosts it acts on, in order (None: all of them),
    e.g. the db host for backups in a layout of several servers."""
    name: str
    lock: str | Callable[[Session], str | None] | None = None
    audit: str | None = None
    interrupted: str = "it stopped where it was; the next run that holds the lock cleans up what it left"
    before: Callable[[Inventory], None] | None = None
    lock_if_provisioned: bool = False
    recap: bool = True
    hosts: Callable[[Inventory, list[Host]], list[Host]] | None = None
    results: list[HostResult] = field(default_factory=list)


def run_task(c, inventory: str | None, task: Task, action: Callable[[Session], Any],
             verbose: bool = False) -> list[HostResult]:
    """Run `action` on each host the task selects, holding the deploy lock if the task declares one, and leave
    the audit line. Stops at the first host that fails (the hosts after it are left as they were), turning
    the failure into one clear line and a non-zero exit."""
    targets.set_verbose(c, verbose)
    reporter = Reporter()
    host, hosts = None, []
    try:
        inv, hosts = targets.select(c, inventory)
        if task.hosts:
            hosts = task.hosts(inv, hosts)
        if task.before:
            task.before(inv)
        for host in hosts:
            session = Session(inv, host, targets.login(host, inv, Stats(), c.config), reporter)
            try:
                task.results.append(HostResult(host.address, True, _locked(session, task, action)))
            finally:
                session.remote.close()
            if task.recap:
                print(recap_line(task.name, host.address, session.stats), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        raise Exit(f"{task.name} interrupted{_on(host, hosts)}: {task.interrupted}", code=130) from None
    except ConnectionLost as error:
        raise Exit(f"{task.name} failed{_on(host, hosts)}: {error} {task.interrupted[0].upper()}"
                   f"{task.interrupted[1:]}.", code=1) from None
    except (InventoryError, RemoteError, source.SourceError) as error:
        if host:
            task.results.append(HostResult(host.address, False, error=str(error)))
        raise Exit(f"{task.name} failed{_on(host, hosts)}: {error}", code=1) from None
    return task.results


def recap_line(name: str, address: str, stats: Stats) -> str:
    """The line a task ends with on each host: what it cost, e.g. `status on 203.0.113.10: 3 remote commands
    over 1 SSH connection in 0.84 s`."""
    return f"{name} on {address}: {stats.summary()}"


def _on(host: Host | None, hosts: list[Host]) -> str:
    """Which host a message is about, when there are several."""
    return f" on {host.address}" if host and len(hosts) > 1 else ""


def _locked(session: Session, task: Task, action: Callable[[Session], Any]) -> Any:
    """`action` inside the deploy lock and with its audit line, when the task declares a lock."""
    what = task.lock(session) if callable(task.lock) else task.lock
    if what is None:
        value = action(session)
        if task.audit:  # a task that cannot hold the lock but changes the server (unlock)
            session.audit(task.audit, "ok")
        return value
    lock = DeployLock(session.remote, session.layout, what, if_provisioned=task.lock_if_provisioned)
    with lock:
        event = task.audit or task.name
        try:
            value = action(session)
        except KeyboardInterrupt:
            _audit_quietly(session, lock, event, "interrupted")
            raise
        except ConnectionLost:
            raise  # nothing can be written: the server frees the lock by itself
        except (RemoteError, source.SourceError) as error:
            _audit_quietly(session, lock, event, "failed", str(error).splitlines()[0] if str(error) else "")
            raise
        if lock.held:
            try:
                session.audit(event, "ok")
            except LockLost:
                # Forced away (`fab unlock --force`) while its last step ran: that step ran to its end, and no
                # step was left, so the run did all it says above. Only its audit line is not written.
                session.reporter.step("WARNING", "lock", f"this run's deploy lock on {session.host.address} was "
                                      "taken away (by `fab unlock --force`) while its last step ran; that step "
                                      "ran to its end and nothing was left to do, but its audit line was not "
                                      "written")
        return value


def _audit_quietly(session: Session, lock: DeployLock, event: str, result: str, detail: str = "") -> None:
    """The audit line of a run that is ending badly: its own failure is the message, not this line's."""
    if not lock.held:
        return
    try:
        session.audit(event, result, detail)
    except (RemoteError, KeyboardInterrupt):
        pass
