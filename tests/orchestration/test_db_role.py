"""Several servers with a db host, against fake servers: `fab provision` does the db host first and gives the
others its link, and never provisions them against nothing; backups go to the db host, and a restore finds its
dump on the first host that holds it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke.exceptions import Exit

from tasks import collection
from tasks.cli import backups as backup_tasks, provision as provision_task
from tasks.connection import targets
from tasks.connection.remote import RemoteError
from tasks.facts.backups import BackupFile
from tasks.inventory import parse
from tasks.provisioning import DatabaseLink
from tests.orchestration.fake import FakeRemote

INVENTORY = parse({"app": {"name": "mysite"}, "hosts": [
    {"address": "10.0.0.2", "roles": ["web"]},
    {"address": "10.0.0.4", "roles": ["web", "worker"]},
    {"address": "10.0.0.3", "roles": ["db"]},
]}, "inventory/test.yaml", Path("."))
LINK = DatabaseLink("10.0.0.3", "-----BEGIN CERTIFICATE-----\n", "secret")
CONTEXT = SimpleNamespace(config=SimpleNamespace())


@pytest.fixture
def servers(monkeypatch):
    """Fake servers by address; a None one refuses the login. Returns (remotes, the hosts logged in to)."""
    remotes = {host.address: FakeRemote(host=host.address) for host in INVENTORY.hosts}
    logins = []

    def login(host, inventory, stats, config=None):
        logins.append(host.address)
        if remotes[host.address] is None:
            raise RemoteError(f"{host.address} refused the key for deploy and root")
        return remotes[host.address]

    monkeypatch.setattr(targets, "select", lambda c, name: (INVENTORY, list(INVENTORY.hosts)))
    monkeypatch.setattr(targets, "login", login)
    return remotes, logins


@pytest.fixture
def provisioned(monkeypatch):
    """The hosts provision_host ran on, in order, with the link each got."""
    calls = []
    monkeypatch.setattr(provision_task, "provision_host",
                        lambda session, config, dry_run, link: calls.append((session.host.address, link)))
    return calls


def test_the_db_host_comes_first_and_the_others_get_its_link(servers, provisioned):
    remotes, _ = servers
    remotes["10.0.0.3"].facts["database:link"] = LINK
    collection.provision.body(CONTEXT)
    assert provisioned == [("10.0.0.3", None), ("10.0.0.2", LINK), ("10.0.0.4", LINK)]


def test_an_unreachable_db_host_leaves_the_app_hosts_alone_and_says_so(servers, provisioned):
    remotes, logins = servers
    remotes["10.0.0.3"] = None
    with pytest.raises(Exit) as stopped:
        collection.provision.body(CONTEXT)
    said = stopped.value.message
    assert "10.0.0.3 refused the key" in said
    assert "The other hosts (10.0.0.2, 10.0.0.4) were not provisioned" in said and "db host" in said
    assert provisioned == [] and logins == ["10.0.0.3"]


def test_a_db_host_that_gives_no_link_back_stops_the_others_too(servers, provisioned):
    with pytest.raises(Exit) as stopped:
        collection.provision.body(CONTEXT)
    assert "gave no address, CA or password back" in stopped.value.message
    assert provisioned == [("10.0.0.3", None)]


def test_a_single_server_is_provisioned_as_before(monkeypatch, provisioned):
    single = parse({"app": {"name": "mysite"}, "hosts": [{"address": "10.0.0.2"}]}, "inventory/test.yaml", Path("."))
    monkeypatch.setattr(targets, "select", lambda c, name: (single, list(single.hosts)))
    monkeypatch.setattr(targets, "login", lambda host, inventory, stats, config=None: FakeRemote())
    collection.provision.body(CONTEXT)
    assert provisioned == [("10.0.0.2", None)]


def test_backup_runs_on_the_db_host_alone(servers, monkeypatch):
    _, logins = servers
    taken = []
    monkeypatch.setattr(backup_tasks, "backup_on", lambda session, media, download: taken.append(session.host.address))
    collection.backup.body(CONTEXT)
    assert taken == ["10.0.0.3"] and logins == ["10.0.0.3"]


def test_a_restore_finds_a_dump_taken_before_a_migration_on_the_app_host(servers, monkeypatch):
    remotes, logins = servers
    name = "20261205T080000Z-before-migrate.dump"
    remotes["10.0.0.3"].facts["backup_files"] = [BackupFile("20261205T030000Z-daily.dump", 10, 60)]
    remotes["10.0.0.2"].facts["backup_files"] = [BackupFile(name, 10, 60)]
    restored = []
    monkeypatch.setattr(backup_tasks, "_restore_steps",
                        lambda session, name_, upload, progress: restored.append((session.host.address, name_)))
    collection.restore.body(CONTEXT, name, yes=True)
    assert restored == [("10.0.0.2", name)]
    assert logins == ["10.0.0.3", "10.0.0.2", "10.0.0.4"]  # the db host first, then the app hosts


def test_a_restore_of_a_dump_no_host_holds_names_where_it_looked(servers, monkeypatch):
    for remote in servers[0].values():
        remote.facts["backup_files"] = []
    with pytest.raises(Exit) as stopped:
        collection.restore.body(CONTEXT, "nothing-manual", yes=True)
    assert ("there is no backup nothing-manual.dump on 10.0.0.3, 10.0.0.2, 10.0.0.4" in stopped.value.message)
