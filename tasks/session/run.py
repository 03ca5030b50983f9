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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
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
from ..provisioning import jobs, processes, served, uv
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
            processes.files_probe(layout), process_commands.units_probe(layout), uv.PROBE]


def server_state(facts: dict) -> ServerState:
    """The ServerState in the facts `commands.state_probes` gathered."""
    return ServerState(releases=releases.parse_releases(facts["releases"]), failed=sorted(facts["failed"]),
                       live=facts["live"], running=facts["running"],
                       history=releases.parse_history(facts["history"]), venvs=facts["venvs"],
                       python=facts["python"], applied=facts["applied"], backups=facts["backups"],
                       free_kib=facts["free"], backend=facts["backend"] or "",
                       maintenance=facts["maintenance"], job_files=facts["job_files"],
                       served_files=facts.get("served_files"), env_sizes=facts.get("env_sizes"),
                       process_files=facts.get("process_files", {}), process_units=facts.get("process_units", {}),
                       uv=facts.get("uv"))


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

    def run(self, *steps: str | tuple[str, str], lines: int = 60,
            progress: Callable[[str], str] | None = None) -> tuple[bool, dict, str]:
        """Run a script of named steps: (ok, its report, the last `lines` lines of its output). A step that takes
        long (pip installing the requirements) says it is still running; with `progress`, how far it got: the
        words it makes of the latest progress line (shell.watched)."""
        from ..commands import shell
        first = steps[0][0] if steps and isinstance(steps[0], tuple) else "remote script"
        latest = [""]

        def heard(line: str) -> None:
            latest[0] = line

        with self.reporter.running(first, lambda: progress(latest[0]) if progress and latest[0] else ""):
            script = shell.script(*steps)
            result = self.remote.run(script, progress=heard) if progress else self.remote.run(script)
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
    # Each host's run whatever became of the others' (status, logs, provision): one that fails or cannot be
    # reached is named at the end, and the task exits non-zero. `parallel`: all at once, each host's output
    # printed together when its run ends.
    keep_going: bool = False
    parallel: bool = False


def run_task(c, inventory: str | None, task: Task, action: Callable[[Session], Any],
             verbose: bool = False) -> list[HostResult]:
    """Run `action` on each host the task selects, holding the deploy lock if the task declares one, and leave
    the audit line. Stops at the first host that fails (the hosts after it are left as they were), turning
    the failure into one clear line and a non-zero exit; with `keep_going`, runs every host and names those
    that failed."""
    targets.set_verbose(c, verbose)
    reporter = Reporter()
    host, hosts = None, []
    try:
        inv, hosts = _selected(c, inventory, task)
        if task.before:
            task.before(inv)
        if task.keep_going:
            return _each_host(c, inv, hosts, task, action, reporter)
        for host in hosts:
            session = Session(inv.seen_from(host), host, targets.login(host, inv, Stats(), c.config), reporter)
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


def _selected(c, inventory: str | None, task: Task) -> tuple[Inventory, list[Host]]:
    """The inventory, and the hosts the task acts on: of those selected (`fab -H`, else the inventory's), the
    ones `task.hosts` chooses by role."""
    inv, selected = targets.select(c, inventory)
    hosts = list(task.hosts(inv, selected)) if task.hosts else selected
    if selected and not hosts:  # `fab -H` naming a server whose roles do not hold this task's work
        raise InventoryError(f"{task.name} has nothing to do on {', '.join(h.address for h in selected)} "
                             f"({', '.join(r for h in selected for r in inv.roles_of(h))}): leave -H out, or name a "
                             "server whose roles hold its work")
    return inv, hosts


def _each_host(c, inv: Inventory, hosts: list[Host], task: Task, action: Callable[[Session], Any],
               reporter: Reporter) -> list[HostResult]:
    """Every host's run, one after another or all at once, each under a header naming the host and its roles
    when there are several; then one line per host that failed, and exit 1 if any did."""
    several = len(hosts) > 1
    opened: list = []  # every connection the runs opened, for Ctrl-C to close

    def one(host: Host, out: Reporter) -> HostResult:
        if several:
            out.line(f"== {host.address} ({', '.join(inv.roles_of(host))}) ==")
        stats = Stats()
        try:
            session = Session(inv.seen_from(host), host, targets.login(host, inv, stats, c.config), out)
            opened.append(session.remote)
            try:
                result = HostResult(host.address, True, _locked(session, task, action))
            finally:
                session.remote.close()
        except ConnectionLost as error:
            result = HostResult(host.address, False, error=f"{error} {task.interrupted[0].upper()}"
                                                           f"{task.interrupted[1:]}.")
        except (RemoteError, source.SourceError) as error:
            result = HostResult(host.address, False, error=str(error))
        if not result.ok and several:
            out.line(f"{task.name} failed on {host.address}: {result.error}")
        if task.recap:
            print(recap_line(task.name, host.address, stats), file=sys.stderr, flush=True)
        return result

    if task.parallel and several:
        buffers = [BufferedReporter(reporter, host.address) for host in hosts]
        task.results.extend(_in_threads([lambda h=host, b=buffer: _flushed(one, h, b)
                                         for host, buffer in zip(hosts, buffers)], opened))
    else:
        task.results.extend(one(host, reporter) for host in hosts)
    failed = [r for r in task.results if not r.ok]
    if failed and not several:
        raise Exit(f"{task.name} failed: {failed[0].error}", code=1)
    if several:
        reporter.line(f"{task.name}: {len(task.results) - len(failed)} of {len(task.results)} hosts ok")
        for result in task.results:
            said = (result.value if isinstance(result.value, str) else "ok") if result.ok else \
                f"FAILED: {result.error.splitlines()[0] if result.error else 'see above'}"
            reporter.line(f"  {result.host}: {said}")
    if failed:
        raise Exit(f"{task.name} failed on {', '.join(r.host for r in failed)} (see above)", code=1)
    return task.results


def _flushed(one: Callable[[Host, Reporter], HostResult], host: Host, buffer: "BufferedReporter") -> HostResult:
    """A host's run whose output is printed in one piece when it ends, however it ends."""
    try:
        return one(host, buffer)
    finally:
        buffer.flush()


class BufferedReporter(Reporter):
    """A host's lines, kept until its run ends and then printed together through `into` (a parallel run's
    output stays grouped per host), under `header` if there are any; `live`: printed as they come instead,
    the header before the first. A step still running says so at once, naming the host, so a long run is
    never silent."""

    def __init__(self, into: Reporter, address: str, header: str = "", live: bool = False):
        super().__init__(into.out, into.terminal)
        self.into, self.address, self.header, self.live, self.lines = into, address, header, live, []

    def line(self, text: str = "") -> None:
        if self.live:
            if self.header:
                self.into.line(self.header)
                self.header = ""
            self.into.line(text)
        else:
            self.lines.append(text)

    def running(self, title: str, so_far: Callable[[], str] = lambda: ""):
        return self.into.running(f"{self.address}: {title}", so_far)

    def flush(self) -> None:
        if self.lines:
            self.into.line("\n".join(([self.header] if self.header else []) + self.lines))
        self.lines = []


def at_once(sessions: list[Session], work: Callable[[Session], Any]) -> list[Any]:
    """`work(session)` on every session at once: what each returned, or the error (a RemoteError other than a
    lost connection) it raised, in the sessions' order. Each host's lines are printed together when its work
    ends; a single session's as they come."""
    def one(session: Session) -> Any:
        try:
            return work(session)
        except ConnectionLost:
            raise
        except RemoteError as error:
            return error if isinstance(error, DeployError) else DeployError(str(error))

    def headed(session: Session, live: bool) -> Session:
        """The session with its lines under its host's header (when there are several servers)."""
        if not session.inventory.several_servers:
            return session
        header = f"== {session.host.address} ({', '.join(session.inventory.roles_of(session.host))}) =="
        return replace(session, reporter=BufferedReporter(session.reporter, session.host.address, header, live))

    if len(sessions) <= 1:
        return [one(headed(session, live=True)) for session in sessions]
    buffered = [headed(session, live=False) for session in sessions]
    return _in_threads([lambda s=s: _flushed(lambda _, out: one(s), s.host, s.reporter) for s in buffered],
                       [s.remote for s in sessions])


def _in_threads(calls: list[Callable[[], Any]], opened: list) -> list[Any]:
    """Each call in a thread of its own (Fabric's way with a group of hosts), their results in order. Ctrl-C
    closes every connection the calls use (`opened`), so each ends at its next command rather than running to
    its end, and is then raised here."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            for remote in list(opened):
                try:
                    remote.close()
                except Exception:  # a connection half gone already: closing what is left is all that matters
                    pass
            raise


def run_together(c, inventory: str | None, task: Task, action: Callable[[list[Session]], Any],
                 verbose: bool = False) -> Any:
    """Run `action` once with a session on every host the task selects, logged in to all first and holding
    the deploy lock on each for the whole run (a rolling deploy, a rollback of every app host). The audit
    line is left on every host. A failure is one clear line and a non-zero exit."""
    targets.set_verbose(c, verbose)
    reporter = Reporter()
    sessions: list[Session] = []
    try:
        inv, hosts = _selected(c, inventory, task)
        if task.before:
            task.before(inv)
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            logins = [pool.submit(targets.login, host, inv, Stats(), c.config) for host in hosts]
            for host, login in zip(hosts, logins):
                sessions.append(Session(inv.seen_from(host), host, login.result(), reporter))
        value = _locked_all(sessions, task, action)
        if task.recap:
            for session in sessions:
                print(recap_line(task.name, session.host.address, session.stats), file=sys.stderr, flush=True)
        return value
    except KeyboardInterrupt:
        raise Exit(f"{task.name} interrupted: {task.interrupted}", code=130) from None
    except ConnectionLost as error:
        raise Exit(f"{task.name} failed: {error} {task.interrupted[0].upper()}{task.interrupted[1:]}.",
                   code=1) from None
    except (InventoryError, RemoteError, source.SourceError) as error:
        raise Exit(f"{task.name} failed: {error}", code=1) from None
    finally:
        for session in sessions:
            session.remote.close()


def _locked_all(sessions: list[Session], task: Task, action: Callable[[list[Session]], Any]) -> Any:
    """`action(sessions)` inside every session's deploy lock, taken one host after another in the
    inventory's order: a second run is refused at the first host it finds locked, and lets go of the locks
    it took before it."""
    def inside(index: int) -> Any:
        if index == len(sessions):
            return action(sessions)
        return _locked(sessions[index], task, lambda _: inside(index + 1))
    return inside(0)


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
