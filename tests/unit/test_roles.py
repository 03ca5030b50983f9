"""Roles in the inventory: a single server does everything, as before; several servers say who does what, and
every layout that cannot work is refused naming the host, the key and the fix."""

from pathlib import Path

import pytest

from tasks import defaults
from tasks.inventory import Inventory, InventoryError, parse

APP = {"name": "mysite", "domains": ["example.com"]}
LAYOUT = [  # the issue's layout: a load balancer, two web servers (one with the worker), a database
    {"address": "10.0.0.10", "roles": ["lb"]},
    {"address": "10.0.0.11", "roles": ["web", "worker"]},
    {"address": "10.0.0.12", "roles": ["web"]},
    {"address": "10.0.0.13", "roles": ["db"]},
]


def parsed(hosts, **top) -> Inventory:
    return parse({"app": {**APP, **top.pop("app", {})}, "hosts": hosts, **top}, "inventory/test.yaml", Path("."))


def error_for(hosts, **top) -> str:
    with pytest.raises(InventoryError) as caught:
        parsed(hosts, **top)
    return str(caught.value)


def test_a_single_server_without_roles_does_everything_it_did_before():
    inv = parsed([{"address": "203.0.113.10"}])
    host = inv.hosts[0]
    assert not inv.several_servers and host.roles == ()
    listed = parsed([{"address": "203.0.113.10", "roles": ["web", "worker", "db"]}], services=["redis"])
    assert not listed.several_servers  # one server, its roles written out: still one server
    assert inv.roles_of(host) == defaults.SINGLE_SERVER_ROLES == ("web", "worker", "db")
    assert inv.app_hosts == (host,) and inv.db_host == host and inv.lb_host is None
    assert host.peer_address == "203.0.113.10"


def test_a_single_server_with_database_url_holds_no_database():
    inv = parsed([{"address": "203.0.113.10"}], database={"url": "postgres://mysite@db.example.net/mysite"})
    assert inv.db_host is None and inv.roles_of(inv.hosts[0]) == ("web", "worker")


def test_the_issues_layout_parses_into_its_roles():
    inv = parsed(LAYOUT, app={"processes": {"worker": "celery -A mysite worker"}})
    lb, web1, web2, db = inv.hosts
    assert inv.several_servers
    assert inv.with_role("web") == (web1, web2) and inv.with_role("worker") == (web1,)
    assert inv.app_hosts == (web1, web2) and inv.db_host == db and inv.lb_host == lb
    assert [inv.roles_of(h) for h in inv.hosts] == [("lb",), ("web", "worker"), ("web",), ("db",)]


def test_a_private_address_is_where_the_others_reach_a_server():
    hosts = [{"address": "web.example.net", "private_address": "10.0.0.11", "roles": ["web"]},
             {"address": "203.0.113.13", "private_address": "10.0.0.13", "roles": ["db"]}]
    web, db = parsed(hosts).hosts
    assert (web.peer_address, db.peer_address) == ("10.0.0.11", "10.0.0.13")
    assert db.address == "203.0.113.13"  # fab still logs in at the public address


@pytest.mark.parametrize("hosts, top, words", [
    ([{"address": "10.0.0.11"}, {"address": "10.0.0.12"}], {},
     ["hosts: 2 servers and none has roles", "roles: [web]", "Several servers"]),
    ([{"address": "10.0.0.11", "roles": ["web", "db"]}, {"address": "10.0.0.12"}], {},
     ["hosts[1]: 10.0.0.12 has no roles while other servers have"]),
    ([{"address": "10.0.0.11", "roles": ["www"]}], {}, ["hosts[0].roles[0]: 'www' is not a role: use web, worker"]),
    ([{"address": "10.0.0.11", "roles": ["web", "web", "db"]}], {}, ["hosts[0].roles[1]: 'web' is listed twice"]),
    ([{"address": "10.0.0.11", "roles": []}], {}, ["hosts[0].roles: is empty"]),
    ([{"address": "10.0.0.11", "roles": "web"}], {}, ["hosts[0].roles: must be a list", "found str 'web'"]),
    ([{"address": "10.0.0.10", "roles": ["lb", "web", "db"]}], {}, ["hosts[0].roles: lb and web on one server"]),
    ([{"address": "10.0.0.11", "roles": ["worker", "db"]}], {}, ["no server has the web role"]),
    ([{"address": "10.0.0.11", "roles": ["web"]}], {}, ["no server has the db role", "database.url"]),
    ([{"address": "10.0.0.11", "roles": ["web", "db"]}, {"address": "10.0.0.12", "roles": ["db"]}], {},
     ["2 servers have the db role", "keep db on one"]),
    ([{"address": "10.0.0.11", "roles": ["web", "db"]}],
     {"database": {"url": "postgres://mysite@db.example.net/mysite"}}, ["hosts[0].roles: db and database.url"]),
    ([{"address": "10.0.0.10", "roles": ["lb"]}, {"address": "10.0.0.12", "roles": ["lb"]},
      {"address": "10.0.0.11", "roles": ["web", "db"]}], {}, ["2 servers have the lb role"]),
    ([{"address": "10.0.0.11", "roles": ["web", "db"]}], {"app": {"processes": {"worker": "rqworker"}}},
     ["app.processes names process types but no server has the worker role", "roles: [web, worker]"]),
    ([{"address": "10.0.0.11", "roles": ["web", "db"]}, {"address": "10.0.0.12", "roles": ["worker"]}], {},
     ["hosts[1].roles: worker without web", "roles: [web, worker]"]),
    ([{"address": "10.0.0.11", "roles": ["web", "worker", "db"]}, {"address": "10.0.0.12", "roles": ["web", "worker"]}],
     {"app": {"processes": {"beat": "celery -A mysite beat"}}}, ["2 servers have the worker role", "must run once"]),
    ([{"address": "10.0.0.11", "roles": ["web", "worker", "db"]}, {"address": "10.0.0.12", "roles": ["web"]}],
     {"services": ["redis"]},
     ["services: redis with several servers", "not supported yet"]),
    ([{"address": "web.example.net", "roles": ["web", "db"]}], {},
     ["hosts[0]: web.example.net is a name", "private_address: 10.0.0.11"]),
    ([{"address": "10.0.0.11", "roles": ["web", "db"]}, {"address": "10.0.0.11", "port": 2222, "roles": ["web"]}],
     {}, ["hosts[1]: 10.0.0.11 is the address of hosts[0] too"]),
])
def test_a_layout_that_cannot_work_is_refused_naming_the_fix(hosts, top, words):
    message = error_for(hosts, **top)
    assert message.startswith("inventory/test.yaml: "), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("value", ["$(reboot)", "10.0.0.11\nroles: [db]", "10.0.0.11; rm -rf /", "db.internal",
                                   "fe80::1%eth0"])
def test_a_private_address_that_is_not_an_ip_address_is_refused(value):
    message = error_for([{"address": "10.0.0.11", "private_address": value, "roles": ["web", "db"]}])
    assert "hosts[0].private_address" in message and "is not an IP address" in message, message


def test_each_server_sees_the_process_types_and_jobs_it_runs():
    jobs = [{"name": "reminders", "command": "send_reminders", "schedule": "daily"}]
    inv = parsed(LAYOUT, app={"processes": {"worker": "celery -A mysite worker"}, "jobs": jobs})
    lb, web1, web2, db = inv.hosts
    assert inv.jobs_host == web1  # the worker host: a job runs once, not once per server
    assert [p.name for p in inv.seen_from(web1).app.processes] == ["worker"]
    assert [j.name for j in inv.seen_from(web1).app.jobs] == ["reminders"]
    for other in (web2, lb, db):
        assert inv.seen_from(other).app.processes == () and inv.seen_from(other).app.jobs == ()
    assert inv.seen_from(web2).hosts == inv.hosts  # the layout itself is unchanged


def test_a_single_server_sees_the_whole_inventory():
    inv = parsed([{"address": "203.0.113.10"}], app={"processes": {"worker": "rqworker"}})
    assert inv.seen_from(inv.hosts[0]) is inv and inv.jobs_host == inv.hosts[0]


def test_one_server_takes_the_daily_backup_of_several():
    inv = parsed(LAYOUT, app={"processes": {"worker": "celery -A mysite worker"}})
    assert inv.backup_host == inv.hosts[3]  # the db host
    managed = parsed([{"address": "10.0.0.11", "roles": ["web"]}, {"address": "10.0.0.12", "roles": ["web", "worker"]}],
                     database={"url": "postgres://mysite@db.example.net/mysite"})
    assert managed.backup_host == managed.hosts[1]  # database.url: the jobs host, not each app host
    from tasks.provisioning import Server
    keeps = [Server(managed, host, (), lambda: None).keeps_backups for host in managed.hosts]
    assert keeps == [False, True]


def test_the_example_inventorys_several_servers_block_parses_into_its_roles():
    """inventory/example.yaml's commented layout, uncommented as a user would, is a valid inventory."""
    import yaml
    text = (Path(__file__).resolve().parents[2] / "inventory" / "example.yaml").read_text()
    block = text[text.index("# hosts:\n#   - address: 203.0.113.9"):text.index("#   batch: 1") + len("#   batch: 1")]
    uncommented = "\n".join(line[2:] for line in block.splitlines()
                            if line.startswith("# ") and not line.startswith("# A deploy"))
    inv = parsed(**yaml.safe_load(uncommented))
    assert [inv.roles_of(host) for host in inv.hosts] == [("lb",), ("web", "worker"), ("web",), ("db",)]
    assert inv.deploy_batch == 1 and inv.lb_host.peer_address == "10.0.0.9"
