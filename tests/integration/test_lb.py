"""The load balancer (role lb) on a real cluster: an lb and two web hosts, the app's database a PostgreSQL the
test stands up on a fourth member (database.url, as test_database_url does).

Provisioned from bare, the second provision changes nothing on any host; the site answers through the lb by its
name over HTTPS (pebble's certificate, on the lb only), pages from both web hosts and static files too; the app
sees the visitor's address and https, whatever the visitor wrote in those headers; a web host takes HTTP from the
lb alone; `fab status` on the lb reads back each web host; maintenance mode is the lb's; and a web host rebooted
during load costs no request, and gets traffic again once it is back.
"""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.conftest import APP, DOMAINS, fab
from tests.integration.inventory import write_inventory
from tests.integration.test_database_url import (PASSWORD, SETTINGS_FROM_URL, VARIABLE, provision,
                                                 stand_up_database)
from tests.load import Load
from tests.outside import https_get, https_request, port_open

# What the app sees of a request: the client's address and scheme as nginx passed them, and Django's verdict.
WHOAMI_VIEW = '''

@never_cache
def whoami(request):
    """The request as the app sees it, for the load balancer's test."""
    return JsonResponse({"forwarded_for": request.META.get("HTTP_X_FORWARDED_FOR"),
                         "forwarded_proto": request.META.get("HTTP_X_FORWARDED_PROTO"),
                         "secure": request.is_secure(), "release": release()})
'''
WHOAMI_URL = '''
urlpatterns.append(path("whoami/", views.whoami))
'''


@pytest.fixture(scope="module")
def cluster():
    # Persistent: a web host is rebooted under load.
    with testhost.start_cluster(["lb", "web1", "web2", "db"], persistent=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def site(cluster, tmp_path_factory):
    lb, web1, web2, db = (cluster[m] for m in ("lb", "web1", "web2", "db"))
    tmp = tmp_path_factory.mktemp("lb")
    stand_up_database(db, [web1, web2], tmp / "db-ca.pem")
    repo = AppRepo(tmp / "project")
    repo.write("mysite/settings.py", (repo.path / "mysite" / "settings.py").read_text() + SETTINGS_FROM_URL)
    repo.write("counter/views.py", (repo.path / "counter" / "views.py").read_text() + WHOAMI_VIEW)
    repo.write("mysite/urls.py", (repo.path / "mysite" / "urls.py").read_text() + WHOAMI_URL)
    repo.commit("the database from DATABASE_URL; a view that shows the request")
    inventory = write_inventory(
        lb, tmp / "site.yaml", layout=[(lb, ("lb",)), (web1, ("web",)), (web2, ("web",))], app=APP, domains=DOMAINS,
        source=repo.path, health_check="/healthz/",
        database={"url": f"postgres://{APP}@{db.address}:5432/{APP}?sslmode=verify-full", "ca_bundle": "db-ca.pem",
                  "password_env": VARIABLE})
    for domain in DOMAINS:
        cluster.set_dns(domain, lb.address)
    first = provision(inventory, PASSWORD)
    return {"cluster": cluster, "lb": lb, "web1": web1, "web2": web2, "inventory": inventory, "first": first}


def root(host: testhost.TestHost, command: str):
    """A root command on a provisioned member, through the deploy user's sudo (root cannot log in any more)."""
    return host.ssh(f"sudo -n sh -c {shlex.quote(command)}", user="deploy")


def lb_get(site, path: str = "/version/", **headers):
    lb = site["lb"]
    if headers:
        return https_request(lb.address, DOMAINS[0], lb.acme_root, path, headers=headers)
    return https_get(lb.address, DOMAINS[0], lb.acme_root, path)


def run_fab(site, task: str, *args: str, check: bool = True):
    return fab(task, "--inventory", str(site["inventory"]), *args, check=check)


def test_provision_gives_each_host_its_part_and_a_second_one_changes_nothing(site):
    lb, web1, web2 = site["lb"], site["web1"], site["web2"]
    # The certificate is the lb's alone: no web host asked for one.
    said = site["first"].stdout
    assert len(re.findall(r"changed\s+tls certificate: issued for", said)) == 1, said
    assert root(lb, f"test -d /etc/letsencrypt/live/{APP}").returncode == 0
    for web in (web1, web2):
        assert root(web, f"test -e /etc/letsencrypt/live/{APP}").returncode != 0
    again = provision(site["inventory"], None).stdout
    recaps = re.findall(r"recap (\S+): \d+ steps, (\d+) changed", again)
    assert sorted(recaps) == sorted((h.address, "0") for h in (lb, web1, web2)), again
    assert re.search(rf"nginx site: HTTPS; passes to {web1.address}:80, {web2.address}:80", again), again
    assert len(re.findall(rf"nginx site: HTTP on \S+:80, for the load balancer {lb.address} alone", again)) == 2, again
    assert re.search(r"firewall: open: 22, 80, 443/tcp\n", again), again
    assert len(re.findall(rf"firewall: open: 22/tcp; 80/tcp from {lb.address} only", again)) == 2, again


def test_the_rendered_configs_pass_nginx_t_with_one_and_three_web_hosts(site):
    from pathlib import Path

    from tasks.inventory import parse
    from tasks.provisioning import Server, nginx
    lb, web1 = site["lb"], site["web1"]
    for count in (1, 3):
        hosts = [{"address": lb.address, "roles": ["lb"]},
                 *({"address": f"10.99.0.{i}", "roles": ["web"]} for i in range(1, count)),
                 {"address": web1.address, "roles": ["web"]}]
        inv = parse({"app": {"name": APP, "domains": list(DOMAINS)}, "hosts": hosts,
                     "database": {"url": f"postgres://{APP}@10.99.0.99/{APP}"}}, "t.yaml", Path("."))
        for host, member in ((inv.hosts[0], lb), (inv.hosts[-1], web1)):
            version = nginx.parse_version(root(member, "nginx -v 2>&1").stdout, 0)
            conf = nginx.site_config(Server(inv, host, (), lambda: None), True, version)
            main = f"events {{}}\nhttp {{\n{conf}\n}}\n"
            out = root(member, f"printf '%s' {shlex.quote(main)} > /tmp/lb-test.conf && nginx -t -c /tmp/lb-test.conf; "
                             "rc=$?; rm -f /tmp/lb-test.conf; exit $rc")
            assert out.returncode == 0, f"{count} web host(s), {member.name}:\n{conf}\n{out.stdout}{out.stderr}"


def test_the_site_answers_through_the_lb_from_both_web_hosts(site):
    deployed = run_fab(site, "deploy")
    said = deployed.stdout
    assert said.count("through this web host's own nginx as app.test -> 200") == 2, said
    assert f"the load balancer {site['lb'].address} passes requests to it" in said, said
    release = re.search(r"deployed (\S+) to 2 hosts: every app host serves (\S+)", said)
    assert release and release.group(1) == release.group(2), said  # one release, rolled over both
    answered = {lb_get(site).body.split()[-1] for _ in range(8)}
    assert answered == {release.group(1)}, answered
    css = lb_get(site, "/static/counter/style.css")
    assert css.status == 200 and "body" in css.body, css
    page = lb_get(site, "/")
    assert page.status == 200 and page.header("strict-transport-security") == "max-age=63072000", page.headers
    assert page.header("x-frame-options") == "SAMEORIGIN" and "x-gangway-release" not in page.headers


def test_the_app_sees_the_visitor_and_https_not_what_the_visitor_wrote(site):
    gateway = site["cluster"].gateway  # this machine, as the cluster's members see it
    for headers in ({}, {"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "http"}):
        seen = json.loads(lb_get(site, "/whoami/", **headers).body)
        assert seen["forwarded_for"] == gateway and seen["forwarded_proto"] == "https" and seen["secure"], seen
    # The web hosts take HTTP from the lb alone.
    for web in (site["web1"], site["web2"]):
        assert not port_open(web.address, 80) and not port_open(web.address, 443)
    assert port_open(site["lb"].address, 443)


def test_status_on_the_lb_reads_back_each_web_host(site):
    # The exit status is every host's: a web host without a backup yet says WARN, so only the lb's lines count.
    out = run_fab(site, "status", check=False).stdout
    lb, web1, web2 = site["lb"], site["web1"], site["web2"]
    assert f"{lb.address}: the load balancer of {APP} at app.test" in out, out
    assert f"{lb.address}: all well" in out, out
    # Each web host's own status asks its nginx over HTTP, as the lb does.
    assert len(re.findall(r"ok\s+health: GET http://app\.test/healthz/ through nginx on the server -> 200, from",
                          out)) == 2, out
    assert f"passes to 2 web host(s): {web1.address}:80, {web2.address}:80" in out, out
    for web in (web1, web2):
        assert re.search(rf"ok\s+web {re.escape(web.address)}:80: GET /healthz/ at \S+ -> 200, from \S+", out), out
    root(web2, "systemctl stop nginx")
    try:
        stopped = run_fab(site, "status", check=False)
        assert stopped.returncode == 2, stopped.stdout
        assert re.search(rf"FAIL\s+web {re.escape(web2.address)}:80: GET /healthz/ at \S+ no answer", stopped.stdout)
        assert lb_get(site).status == 200  # web1 answers meanwhile
    finally:
        root(web2, "systemctl start nginx")


def test_maintenance_is_switched_on_the_lb(site):
    out = run_fab(site, "maintenance", "on").stdout
    assert f"{site['lb'].address}: maintenance mode is on" in out, out
    assert out.count("not switched here: visitors reach the site through the load balancer") == 2, out
    try:
        page = lb_get(site, "/")
        assert page.status == 503 and page.header("retry-after") == "300", page.headers
    finally:
        run_fab(site, "maintenance", "off")
    assert lb_get(site).status == 200


def test_a_web_host_rebooted_under_load_costs_no_request_and_rejoins(site):
    lb, web2 = site["lb"], site["web2"]
    web2_release = root(web2, f"readlink /srv/{APP}/current").stdout.strip().rsplit("/", 1)[-1]
    assert web2_release
    with Load(lb.address, DOMAINS[0], lb.acme_root, workers=3, max_seconds=240) as load:
        web2.reboot()
        back = time.monotonic()
        deadline = back + 90
        while time.monotonic() < deadline and not any(web2_release in body
                                                      for body in load.answered_after(back)):
            time.sleep(1)
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.samples)} failed: {failed[:5]}"
    assert any(web2_release in body for body in load.answered_after(back)), "web2 did not rejoin"
    print(f"{len(load.samples)} requests through the lb while web2 rebooted, none failed")
