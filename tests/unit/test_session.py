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


@pytest.mark.parametrize("module, name, args", [("provision", "provision", {}),
                                               ("provision", "provision", {"dry_run": True}),
                                               ("deploy", "deploy", {}), ("rollback", "rollback", {})])
def test_deploy_rollback_and_provision_print_their_own_recap_so_they_get_no_second(monkeypatch, module, name,
                                                                                      args):
    import importlib
    tasks_module = importlib.import_module(f"tasks.cli.{module}")
    declared = []

    def run_task_(c, inventory, task, action, verbose=False):
        declared.append(task)
        return []
    monkeypatch.setattr(tasks_module, "run_task", run_task_)
    getattr(tasks_module, name).body(SimpleNamespace(config=SimpleNamespace()), **args)
    assert [t.recap for t in declared] == [False]
