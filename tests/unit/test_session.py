"""The session layer without a server: every task ends each host's run with one line saying what it cost
(commands, SSH connections, seconds), on stderr; the tasks that print their own recap do not get a second."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from invoke.exceptions import Exit

from tasks.session import run as session_layer
from tasks.connection import targets
from tasks.inventory import App, Host, Inventory
from tasks.session.run import Task, run_task

HOSTS = (Host("203.0.113.10"), Host("203.0.113.11"))


class Remote:
    def __init__(self, stats):
        self.stats = stats
        stats.connections += 1

    def close(self):
        pass


@pytest.fixture
def servers(monkeypatch):
    inventory = Inventory(App("mysite"), HOSTS)
    monkeypatch.setattr(targets, "select", lambda c, name: (inventory, list(HOSTS)))
    monkeypatch.setattr(targets, "login", lambda host, inv, stats, config=None: Remote(stats))
    return SimpleNamespace(config=SimpleNamespace(get=lambda key: None))


def _ran(session):
    session.stats.commands += 3
    print(f"the task's own output for {session.host.address}")


def test_every_task_ends_each_host_with_what_it_cost_on_stderr(servers, capsys):
    run_task(servers, None, Task("releases"), _ran)
    out, err = capsys.readouterr()
    assert "remote command" not in out  # stdout stays the task's own: `fab logs > file` keeps only the log
    lines = err.splitlines()
    assert len(lines) == 2
    for line, host in zip(lines, HOSTS):
        assert re.fullmatch(rf"releases on {re.escape(host.address)}: 3 remote commands over 1 SSH connection "
                            r"in \d+\.\d\d s", line), line


def test_a_task_that_prints_its_own_recap_gets_no_second_line(servers, capsys):
    run_task(servers, None, Task("provision", recap=False), _ran)
    assert capsys.readouterr().err == ""


def test_a_failed_host_ends_with_the_failure_not_a_recap(servers, capsys):
    def fail(session):
        raise session_layer.DeployError("it broke")
    with pytest.raises(Exit) as failed:
        run_task(servers, None, Task("backup"), fail)
    assert "backup failed on 203.0.113.10: it broke" in failed.value.message
    assert "remote command" not in capsys.readouterr().err


@pytest.mark.parametrize("name, args", [("provision", {}), ("provision", {"dry_run": True}), ("deploy", {}),
                                        ("rollback", {})])
def test_deploy_rollback_and_provision_print_their_own_recap_so_they_get_no_second(monkeypatch, name, args):
    assert [t.recap for t in declared_tasks(monkeypatch, name, args)] == [False]


def declared_tasks(monkeypatch, name: str, args: dict) -> list[Task]:
    """What the task NAME declares to the session layer when called with ARGS."""
    from tasks import collection
    from tasks.cli import provision as provision_steps  # provision's runs are in its steps (db host first)
    declared = []

    def runner(c, inventory, task, action, verbose=False):
        declared.append(task)
        return []
    for module in (session_layer, provision_steps):
        for attribute in ("run_task", "run_together"):
            if hasattr(module, attribute):
                monkeypatch.setattr(module, attribute, runner)
    getattr(collection, name).body(SimpleNamespace(config=SimpleNamespace()), **args)
    return declared


# --- several servers: every host's run whatever the others did, at once, grouped; or one run on all ---------

LAYOUT = Inventory(App("mysite"), (Host("10.0.0.10", roles=("lb",)), Host("10.0.0.11", roles=("web", "db")),
                                   Host("10.0.0.12", roles=("web",))))


@pytest.fixture
def layout(monkeypatch):
    monkeypatch.setattr(targets, "select", lambda c, name: (LAYOUT, list(LAYOUT.hosts)))
    monkeypatch.setattr(targets, "login", lambda host, inv, stats, config=None: Remote(stats))
    return SimpleNamespace(config=SimpleNamespace(get=lambda key: None))


def _chatty(session):
    import time
    for n in range(3):
        session.reporter.line(f"{session.host.address} line {n}")
        time.sleep(0.01)
    if session.host.address == "10.0.0.11":
        raise session_layer.DeployError("unreachable, say")
    return "3 steps, 0 changed"


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failed_host_stops_only_itself_and_the_recap_names_it(layout, capsys, parallel):
    with pytest.raises(Exit) as failed:
        run_task(layout, None, Task("provision", recap=False, keep_going=True, parallel=parallel), _chatty)
    out = capsys.readouterr().out
    assert "provision failed on 10.0.0.11" in failed.value.message
    # Each host's lines together, under its header, whichever ran first.
    for address, roles in (("10.0.0.10", "lb"), ("10.0.0.11", "web, db"), ("10.0.0.12", "web")):
        block = f"== {address} ({roles}) ==\n" + "".join(f"{address} line {n}\n" for n in range(3))
        assert block in out, out
    assert "provision failed on 10.0.0.11: unreachable, say" in out
    assert out.endswith("provision: 2 of 3 hosts ok\n  10.0.0.10: 3 steps, 0 changed\n"
                        "  10.0.0.11: FAILED: unreachable, say\n  10.0.0.12: 3 steps, 0 changed\n"), out


def test_a_task_picks_its_hosts_by_role(layout, capsys):
    seen = []
    run_task(layout, None, Task("status", hosts=lambda inv, hosts: [h for h in hosts if h.has("web")],
                                keep_going=True),
             lambda session: seen.append(session.host.address))
    assert seen == ["10.0.0.11", "10.0.0.12"]


def test_a_run_on_all_hosts_holds_every_lock_and_audits_each(layout, monkeypatch):
    events = []

    class Lock:
        def __init__(self, remote, layout_, what, if_provisioned=False):
            self.remote, self.held = remote, True

        def __enter__(self):
            events.append(("lock", self.remote.host))
            return self

        def __exit__(self, *exc):
            events.append(("unlock", self.remote.host))

    def login(host, inv, stats, config=None):
        remote = Remote(stats)
        remote.host = host.address
        return remote
    monkeypatch.setattr(targets, "login", login)
    monkeypatch.setattr(session_layer, "DeployLock", Lock)
    monkeypatch.setattr(session_layer.Session, "audit",
                        lambda self, event, result, detail="": events.append(("audit", self.host.address, result)))

    def action(sessions):
        events.append(("action", [s.host.address for s in sessions]))
        return "done"
    value = session_layer.run_together(layout, None, Task("deploy", lock="deploy", recap=False,
                                                          hosts=targets.app_hosts), action)
    assert value == "done"
    assert events == [("lock", "10.0.0.11"), ("lock", "10.0.0.12"), ("action", ["10.0.0.11", "10.0.0.12"]),
                      ("audit", "10.0.0.12", "ok"), ("unlock", "10.0.0.12"),
                      ("audit", "10.0.0.11", "ok"), ("unlock", "10.0.0.11")]


@pytest.mark.parametrize("name, args, chosen", [
    ("manage", {"args": ["showmigrations"]}, ["10.0.0.11"]),  # one database: one app host
    ("config", {}, ["10.0.0.11", "10.0.0.12"]),               # every app host's environment
    ("list_releases", {}, ["10.0.0.11", "10.0.0.12"]),
    ("status", {}, ["10.0.0.10", "10.0.0.11", "10.0.0.12"]),  # every server, db and lb too
    ("logs", {}, ["10.0.0.11", "10.0.0.12"]),                   # the app's journal: where it runs
    ("logs", {"nginx": True}, ["10.0.0.10", "10.0.0.11", "10.0.0.12"]),
    ("deploy", {}, ["10.0.0.11", "10.0.0.12"]),
    ("rollback", {}, ["10.0.0.11", "10.0.0.12"]),
])
def test_each_task_acts_on_the_servers_its_work_is_on(monkeypatch, name, args, chosen):
    task = declared_tasks(monkeypatch, name, args)[0]
    picked = task.hosts(LAYOUT, list(LAYOUT.hosts)) if task.hosts else LAYOUT.hosts
    assert [h.address for h in picked] == chosen


def test_work_at_once_groups_each_hosts_lines_under_its_header_and_says_nothing_for_a_silent_one():
    import io
    from tasks.session.runner import Reporter
    out = io.StringIO()
    reporter = Reporter(out, terminal=False)
    sessions = [session_layer.Session(LAYOUT, host, None, reporter) for host in LAYOUT.hosts[1:]]

    def work(session):
        if session.host.address == "10.0.0.12":
            raise session_layer.DeployError("it broke")
        session.reporter.line("built")
        return "fine"
    results = session_layer.at_once(sessions, work)
    assert results[0] == "fine" and str(results[1]) == "it broke"
    assert out.getvalue() == "== 10.0.0.11 (web, db) ==\nbuilt\n"  # the silent host prints no header
    out.truncate(0), out.seek(0)
    assert session_layer.at_once(sessions[:1], work) == ["fine"]
    assert out.getvalue() == "== 10.0.0.11 (web, db) ==\nbuilt\n"  # one host: as it comes, under its header


def test_ctrl_c_during_work_at_once_closes_every_connection_instead_of_waiting_for_the_work():
    import os
    import signal
    import threading

    class Hanging:
        """A connection whose command runs until the connection is closed (a long pip, a slow migration)."""
        def __init__(self):
            self.closed, self.ended_by_close = threading.Event(), False

        def run(self, script):
            if self.closed.wait(120):
                self.ended_by_close = True
                raise session_layer.ConnectionLost("the connection was closed")
            return None

        def close(self):
            self.closed.set()

    remotes = [Hanging(), Hanging()]
    sessions = [session_layer.Session(LAYOUT, host, remote, session_layer.Reporter())
                for host, remote in zip(LAYOUT.hosts[1:], remotes)]
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # the operator's Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        session_layer.at_once(sessions, lambda session: session.remote.run("sleep 600"))
    # Each command ended because its connection was closed, not by running to its end.
    assert all(remote.closed.is_set() and remote.ended_by_close for remote in remotes)


def test_a_server_named_by_h_that_does_not_hold_the_tasks_work_is_refused_not_skipped(monkeypatch):
    lb = LAYOUT.hosts[0]
    monkeypatch.setattr(targets, "select", lambda c, name: (LAYOUT, [lb]))
    context = SimpleNamespace(config=SimpleNamespace(get=lambda key: None))
    for runner in (run_task, session_layer.run_together):
        with pytest.raises(Exit) as refused:
            runner(context, None, Task("deploy", hosts=targets.app_hosts), lambda anything: None)
        assert refused.value.message == ("deploy failed: deploy has nothing to do on 10.0.0.10 (lb): leave -H out, "
                                         "or name a server whose roles hold its work"), refused.value.message
