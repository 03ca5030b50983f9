"""A layout with a load balancer against the fake server: what deploy, status and maintenance do on the lb and
on a web host behind it, and what they say when a web host does not answer."""

from __future__ import annotations

import io
from types import SimpleNamespace

from tasks import collection
from tasks.cli import deploy, status
from tasks.inventory import App, Database, Host, Inventory
from tasks.layout import Layout
from tasks.provisioning import served
from tasks.session import run as session_run
from tasks.session.run import Session
from tasks.session.runner import Reporter
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
LAYOUT = Layout("mysite")
LB, WEB1, WEB2 = (Host("10.0.0.10", roles=("lb",)), Host("10.0.0.11", roles=("web",)),
                  Host("10.0.0.12", roles=("web",)))
SITE = Inventory(App("mysite", domains=("app.test",), health_check="/healthz/"), (LB, WEB1, WEB2),
                 database=Database(url="postgres://mysite@10.0.0.20/mysite"))


def on(host: Host, remote: fake.FakeRemote, out: io.StringIO) -> Session:
    return Session(SITE, host, remote, Reporter(out, terminal=False))


def a_web_host() -> fake.FakeRemote:
    remote = fake.FakeRemote({**fake.server(fake.release(LIVE), live=LIVE, running=[LIVE], inventory=SITE),
                              "served_files": served.as_provisioned(SITE, WEB1)}, host=WEB1.address)
    return remote.on("checks", report={"migrations": [], "venv": "reused", "warnings": []})


def test_a_web_host_behind_the_lb_is_asked_through_its_own_nginx_over_http_and_the_message_says_so():
    remote = a_web_host().on("start", report={"health": "200"}).on(
        "switch", report={"through_nginx": "200", "repaired": False})
    out = io.StringIO()
    release = deploy.deploy_to(on(WEB1, remote, out), fake.a_source())
    script = next(s for s in remote.scripts if "switch" in fake.steps_of(s))
    assert "--connect-to app.test:80:127.0.0.1:80" in script and "http://app.test/healthz/" in script
    assert "https://app.test" not in script and "--resolve" not in script
    start = next(s for s in remote.scripts if "start" in fake.steps_of(s))
    assert "X-Forwarded-Proto: https" in start  # the app is asked as visitors reach it: over HTTPS at the lb
    said = out.getvalue()
    assert (f"the site answers GET /healthz/ through this web host's own nginx as app.test -> 200, from {release} "
            "(what one host's switch can prove: the load balancer 10.0.0.10 passes requests to it; `fab status` "
            "there reads back whether each web host answers)") in said, said


def test_a_deploy_has_nothing_to_do_on_the_lb():
    remote, out = fake.FakeRemote(host=LB.address), io.StringIO()
    assert deploy.deploy_to(on(LB, remote, out), fake.a_source()) == ""
    assert remote.scripts == [] and remote.reads == []
    assert "10.0.0.10 (lb): no release runs here, nothing to deploy" in out.getvalue()


def lb_facts(upstream) -> dict:
    certbot = status.Timer("certbot.timer", "active", 1_800_000_000 - 3600, 1_800_000_000 + 3600, "success")
    apt = status.Timer("apt-daily-upgrade.timer", "active", None, 1_800_000_000 + 3600, "")
    return {"now": 1_800_000_000, "timers": [certbot, apt],
            "units": {"nginx.service": "active/running", "unattended-upgrades.service": "active/running"},
            "health": status.Health("200", 0, True, LAYOUT.socket(LIVE)), "certificate": 1_800_000_000 + 60 * 86400,
            "disk": [status.Disk("/", 40, 8 << 20)], "memory": {"MemTotal": 2_000_000, "MemAvailable": 1_500_000},
            "updates": (0, 0), "unattended": True, "reboot": None, "maintenance": False, "upstream": upstream}


def lb_status(upstream) -> tuple[int, str, fake.FakeRemote]:
    remote, out = fake.FakeRemote(lb_facts(upstream), host=LB.address), io.StringIO()
    code = status.status_on(on(LB, remote, out))
    return code, out.getvalue(), remote


def test_status_on_the_lb_reads_its_upstream_back_and_each_web_host_answer():
    members = [status.Member("10.0.0.11:80", "200", 0, LAYOUT.socket(LIVE)), status.Member("10.0.0.12:80", "200", 0)]
    code, out, remote = lb_status(members)
    assert "10.0.0.10: the load balancer of mysite at app.test" in out
    assert "passes to 2 web host(s): 10.0.0.11:80, 10.0.0.12:80 (read back from its site)" in out
    assert f"web 10.0.0.11:80: GET /healthz/ at 10.0.0.11:80 -> 200, from {LIVE}" in out
    assert "GET https://app.test/healthz/ through nginx on the server -> 200" in out
    assert code == 0 and out.rstrip().endswith("10.0.0.10: all well"), out
    asked = [key for read in remote.reads for key in read]
    assert "upstream" in asked and "database:reach" not in asked and "provisioned" not in asked


def test_status_on_the_lb_fails_naming_the_web_host_that_does_not_answer():
    members = [status.Member("10.0.0.11:80", "200", 0), status.Member("10.0.0.12:80", "000", 7)]
    code, out, _ = lb_status(members)
    assert code == 2 and "web 10.0.0.12:80: GET /healthz/ at 10.0.0.12:80 no answer (curl exit 7)" in out
    assert "needs attention: web 10.0.0.12:80" in out.rstrip().splitlines()[-1]
    code, out, _ = lb_status(status.Unreadable("the site file could not be read (exit 2)"))
    assert code == 2 and "which web hosts the load balancer passes to is unknown" in out


def test_maintenance_is_switched_on_the_lb_alone(monkeypatch):
    seen = []
    monkeypatch.setattr(session_run, "run_task", lambda c, inv, task, action, verbose: seen.append((task, action)))
    collection.maintenance.body(SimpleNamespace(config=SimpleNamespace()), "on")
    (task, action), = seen
    said = {}
    for host in SITE.hosts:
        remote = fake.FakeRemote(host=host.address).on("maintenance").on("readback", report={"maintenance": True})
        out = io.StringIO()
        session = on(host, remote, out)
        said[host.address] = (task.lock(session), out, remote)
        action(session)
    assert said["10.0.0.10"][0] == "maintenance on" and said["10.0.0.11"][0] is None
    assert "10.0.0.10: maintenance mode is on (read back from the server)" in said["10.0.0.10"][1].getvalue()
    for web in ("10.0.0.11", "10.0.0.12"):
        assert said[web][2].scripts == []
        assert (f"{web}: not switched here: visitors reach the site through the load balancer 10.0.0.10, which "
                "holds the maintenance flag") in said[web][1].getvalue()


def test_status_on_a_web_host_behind_the_lb_asks_its_own_nginx_over_http_and_wants_no_certificate():
    facts = {**fake.server(fake.release(LIVE), live=LIVE, running=[LIVE], inventory=SITE), **lb_facts([]),
             "units": {f"mysite@{LIVE}.service": "active/running", "nginx.service": "active/running",
                       "unattended-upgrades.service": "active/running"},
             "health": status.Health("200", 0, True, LAYOUT.socket(LIVE)), "certificate": None,
             "newest_backup": None, "database:reach": {"ok": True, "said": "mysite@mysite"}}
    remote, out = fake.FakeRemote(facts, host=WEB1.address), io.StringIO()
    status.status_on(on(WEB1, remote, out))
    said = out.getvalue()
    assert f"GET http://app.test/healthz/ through nginx on the server -> 200, from {LIVE}" in said, said
    assert "certificate" not in said and "certbot" not in said, said
