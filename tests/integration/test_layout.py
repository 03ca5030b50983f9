"""The layout of several servers, as a growing team runs it, on four real servers of one cluster (README,
"Several servers"): `lb` (nginx in front, TLS), `web1` (web), `web2` (web and the worker), `db` (PostgreSQL).

Proven on one provisioned cluster, each test from the state it needs: one `fab provision` from bare sets up
the db host first and the others at once (the certificate on the load balancer alone), and a second changes
nothing on any; the rendered nginx sites pass `nginx -t` with one and three web servers; the site answers
through the load balancer by its name over HTTPS from both web servers, with its headers and static files, and
the app sees the visitor's address and https whatever the visitor wrote; a deploy under load through the load
balancer drops no request and leaves every web server and the worker on the new release; a release whose
health check fails on the second web server goes live on none and the message names it; the database takes
the web servers over TLS and refuses the load balancer and this machine; a rollback over a migration is refused
on every server, then reverses it once with --migrate-back; backups and restores run on the db host; `fab
status` reads every server back, and says FAIL for a web server whose nginx is stopped while the site still
answers; maintenance mode is the load balancer's; and, last, a web server rebooted under load costs no request,
gets traffic again once it is back, and runs its worker again with no command.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import time

import pytest

from tests import testhost
from tests.apprepo import AppRepo
from tests.integration.appsite import GOOD_MIGRATION
from tests.integration.conftest import APP, DOMAINS, fab
from tests.integration.inventory import write_inventory
from tests.integration.test_database_url import SETTINGS_FROM_URL
from tests.load import Load
from tests.outside import https_get, https_request, port_open

# The app's health check fails on a server that has this file: a release that cannot serve there.
SICK = "/etc/gangway-test-sick"
SICK_HEALTH = f'''

def healthz(request):
    """Ill on purpose where {SICK} exists: one server of several failing its health check."""
    import os
    if os.path.exists("{SICK}"):
        return JsonResponse({{"status": "sick on purpose"}}, status=503)
    return _healthz(request)
'''

# What the app sees of a request: the client's address and scheme as nginx passed them, and Django's verdict.
WHOAMI_VIEW = '''

@never_cache
def whoami(request):
    """The request as the app sees it, and the server that answered, for the load balancer's tests."""
    import socket
    return JsonResponse({"forwarded_for": request.META.get("HTTP_X_FORWARDED_FOR"),
                         "forwarded_proto": request.META.get("HTTP_X_FORWARDED_PROTO"),
                         "secure": request.is_secure(), "release": release(), "server": socket.gethostname()})
'''
WHOAMI_URL = '''
urlpatterns.append(path("whoami/", views.whoami))
'''


@pytest.fixture(scope="module")
def cluster():
    # Persistent: the last test reboots a web server, which must keep its disk.
    with testhost.start_cluster(["lb", "web1", "web2", "db"], persistent=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def layout(cluster, tmp_path_factory):
    lb, web1, web2, db = (cluster[name] for name in ("lb", "web1", "web2", "db"))
    tmp = tmp_path_factory.mktemp("layout")
    repo = AppRepo(tmp / "project")
    repo.write("mysite/settings.py", (repo.path / "mysite" / "settings.py").read_text() + SETTINGS_FROM_URL)
    repo.write("counter/views.py", (repo.path / "counter" / "views.py").read_text() + WHOAMI_VIEW)
    repo.write("mysite/urls.py", (repo.path / "mysite" / "urls.py").read_text() + WHOAMI_URL)
    repo.write_worker("1")
    inventory = write_inventory(lb, tmp / "site.yaml", app=APP, domains=DOMAINS, source=repo.path,
                                health_check="/healthz/", processes={"worker": "manage.py gw_worker"},
                                layout=[(lb, ("lb",)), (web1, ("web",)), (web2, ("web", "worker")), (db, ("db",))])
    for domain in DOMAINS:
        cluster.set_dns(domain, lb.address)
    first = fab("provision", "--inventory", str(inventory))
    return {"lb": lb, "web1": web1, "web2": web2, "db": db, "repo": repo, "inventory": inventory,
            "first": first}


def run(layout, task: str, *args: str, check: bool = True):
    return fab(task, "--inventory", str(layout["inventory"]), *args, check=check)


def root(host: testhost.TestHost, command: str):
    """A root command on a provisioned server, through the deploy user's sudo (root cannot log in any more)."""
    return host.ssh(f"sudo -n sh -c {shlex.quote(command)}", user="deploy")


def live(host: testhost.TestHost) -> str:
    """The release a web server's live link points at, read on the server."""
    return root(host, f"readlink /srv/{APP}/current").stdout.strip().rsplit("/", 1)[-1]


def through_lb(layout, path: str = "/version/", **headers):
    """A visitor's request: to the load balancer, by the site's name, over HTTPS."""
    lb = layout["lb"]
    if headers:
        return https_request(lb.address, DOMAINS[0], lb.acme_root, path, headers=headers)
    return https_get(lb.address, DOMAINS[0], lb.acme_root, path)


def serving(layout) -> str:
    """The release every web server serves, after a deploy if none is live yet: for the tests that need a live
    site, whatever ran before them."""
    if not live(layout["web1"]) or live(layout["web1"]) != live(layout["web2"]):
        deployed(run(layout, "deploy").stdout)
    return live(layout["web1"])


def worker_of(host: testhost.TestHost) -> str:
    """The releases whose worker is active on `host`, read from systemd."""
    out = root(host, f"systemctl list-units --plain --no-legend --state=active '{APP}-worker@*.service'").stdout
    return ",".join(sorted(re.findall(rf"{APP}-worker@(\S+)\.service", out)))


def deployed(out: str) -> str:
    found = re.search(r"deployed (\S+) to 2 hosts", out)
    assert found, out
    return found.group(1)


def test_provisioned_from_bare_db_first_then_the_others_and_again_with_nothing_to_change(layout):
    lb, web1, web2, db = (layout[name] for name in ("lb", "web1", "web2", "db"))
    said = layout["first"].stdout
    assert said.index(f"recap {db.address}:") < said.index(f"== {web1.address} (web) =="), said
    for host, roles in ((lb, "lb"), (web1, "web"), (web2, "web, worker")):
        assert f"== {host.address} ({roles}) ==" in said, said
    # The certificate is the load balancer's alone: no web server asked for one.
    assert len(re.findall(r"changed\s+tls certificate: issued for", said)) == 1, said
    assert root(lb, f"test -d /etc/letsencrypt/live/{APP}").returncode == 0
    for web in (web1, web2):
        assert root(web, f"test -e /etc/letsencrypt/live/{APP}").returncode != 0
    again = run(layout, "provision").stdout
    for host in (lb, web1, web2, db):
        assert re.search(rf"recap {re.escape(host.address)}: \d+ steps, 0 changed", again), again
    assert re.search(rf"nginx site: HTTPS; passes to {web1.address}:80, {web2.address}:80", again), again
    assert len(re.findall(rf"nginx site: HTTP on \S+:80, for the load balancer {lb.address} alone", again)) == 2, \
        again
    # Each server opens what its role needs, and no more.
    assert re.search(r"firewall: open: 22, 80, 443/tcp\n", again), again
    assert len(re.findall(rf"firewall: open: 22/tcp; 80/tcp from {re.escape(lb.address)} only", again)) == 2, again
    assert (f"firewall: open: 22/tcp; 5432/tcp from {web1.address} only; 5432/tcp from {web2.address} only"
            in again), again


def test_the_rendered_configs_pass_nginx_t_with_one_and_three_web_servers(layout):
    from pathlib import Path

    from tasks.inventory import parse
    from tasks.provisioning import Server, nginx
    lb, web1 = layout["lb"], layout["web1"]
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
            assert out.returncode == 0, f"{count} web server(s), {member.name}:\n{conf}\n{out.stdout}{out.stderr}"


def test_the_site_answers_through_the_lb_from_both_web_servers_and_the_app_sees_the_visitor(layout, cluster):
    lb, web1, web2 = layout["lb"], layout["web1"], layout["web2"]
    said = run(layout, "deploy").stdout
    assert said.count("through this web host's own nginx as app.test -> 200") == 2, said
    assert f"the load balancer {lb.address} passes requests to it" in said, said
    release = deployed(said)
    assert f"every app host serves {release}" in said, said
    answered = {through_lb(layout).body.split()[-1] for _ in range(8)}
    assert answered == {release}, answered
    css = through_lb(layout, "/static/counter/style.css")
    assert css.status == 200 and "body" in css.body, css
    page = through_lb(layout, "/")
    assert page.status == 200 and page.header("strict-transport-security") == "max-age=63072000", page.headers
    assert page.header("x-frame-options") == "SAMEORIGIN" and "x-gangway-release" not in page.headers
    # The app sees this machine (as the cluster's members see it) and https, whatever the visitor wrote.
    for headers in ({}, {"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "http"}):
        seen = json.loads(through_lb(layout, "/whoami/", **headers).body)
        assert seen["forwarded_for"] == cluster.gateway and seen["forwarded_proto"] == "https" and seen["secure"], \
            seen
    # The web servers take HTTP from the load balancer alone.
    for web in (web1, web2):
        assert not port_open(web.address, 80) and not port_open(web.address, 443)
    assert port_open(lb.address, 443)


def test_the_db_host_keeps_its_ca_key_and_the_web_servers_get_the_client_only(layout):
    web1, db = layout["web1"], layout["db"]
    ca = f"/etc/gangway/{APP}/database-ca.pem"
    assert root(db, f"stat -c '%U %a' /etc/gangway/{APP}/database-ca.key /etc/gangway/{APP}/database-password") \
        .stdout.split("\n")[:2] == ["root 600", "root 600"]
    assert root(web1, f"cat {ca}").stdout == root(db, f"cat {ca}").stdout
    assert root(web1, f"test -e /etc/gangway/{APP}/database-ca.key").returncode != 0  # the key never left db
    san = root(db, f"openssl x509 -in /etc/gangway/{APP}/database-server.pem -noout -ext subjectAltName").stdout
    assert f"IP Address:{db.address}" in san, san
    installed = root(web1, "dpkg-query -W -f='${Package} ${Status}\\n' 'postgresql*'").stdout
    assert re.search(r"^postgresql-client \S+ ok installed", installed, re.M), installed
    assert not re.search(r"^postgresql(-\d+)? \S+ ok installed", installed, re.M), installed
    assert root(web1, f"stat -c '%U %a' /srv/{APP}/shared/database.pgpass").stdout.strip() == f"{APP} 600"


def test_a_rolling_deploy_under_load_through_the_lb_drops_no_request(layout):
    lb, web1, web2, repo = layout["lb"], layout["web1"], layout["web2"], layout["repo"]
    before = serving(layout)
    repo.set_version("layout-2")
    with Load(lb.address, DOMAINS[0], lb.acme_root, workers=3, max_seconds=300) as load:
        out = run(layout, "deploy").stdout
        returned = time.monotonic()
        time.sleep(1)
    release = deployed(out)
    failed = load.failures()
    assert len(load.samples) > 20 and not failed, f"{len(failed)} of {len(load.samples)} failed: {failed[:5]}"
    assert load.answered_after(returned) == {f"layout-2 {release}"}
    print(f"\n{len(load.samples)} requests through the lb during the rolling deploy, none failed")
    assert live(web1) == live(web2) == release != before
    assert worker_of(web2) == release and worker_of(web1) == ""
    assert f"every app host serves {release}" in out
    # One migrate, from the first app host; one switch per web server, the worker's last.
    switched = [line for line in out.splitlines() if re.match(r"\s+changed\s+switch: ", line)]
    assert len(switched) == 2, out
    assert out.index(f"== {web1.address}") < out.rindex(f"== {web2.address}"), out


def test_a_release_failing_its_health_check_on_the_second_web_server_goes_live_nowhere(layout):
    web1, web2, repo = layout["web1"], layout["web2"], layout["repo"]
    good = repo.git("rev-parse", "HEAD")
    before = serving(layout)
    views = (repo.path / "counter/views.py").read_text()
    repo.write("counter/views.py", views.replace("def healthz(request):", "def _healthz(request):") + SICK_HEALTH)
    repo.set_version("sick")  # commits the ill health check with it
    root(web2, f"touch {SICK}")
    try:
        failed = run(layout, "deploy", check=False)
    finally:
        root(web2, f"rm -f {SICK}")
        repo.reset(good)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said
    assert f"{web2.address} failed its switch, so no further host switched" in said, said
    assert f"{web1.address} switched back to {before}" in said, said
    assert f"Read back now: every app host serves {before}" in said, said
    assert live(web1) == live(web2) == before
    assert worker_of(web2) == before
    assert through_lb(layout).body.split()[-1] == before


def test_the_database_takes_the_web_servers_over_tls_and_refuses_the_lb_and_this_machine(layout):
    lb, web1, web2, db = (layout[name] for name in ("lb", "web1", "web2", "db"))
    for _ in range(4):
        assert through_lb(layout, "/").status == 200  # rows written by both web servers, in turn
    sessions = root(db, f"cd / && runuser -u postgres -- psql -X -q -t -A -d {APP} -c \"select host(a.client_addr) "
                        f"|| ' ' || s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) where a.usename = "
                        f"'{APP}'\"").stdout.split("\n")
    seen = {line.split()[0]: line.split()[1] for line in sessions if line.strip()}
    assert set(seen) <= {web1.address, web2.address} and seen and set(seen.values()) == {"true"}, seen
    ca = f"/etc/gangway/{APP}/database-ca.pem"
    url = root(web1, f"grep ^DATABASE_URL= /srv/{APP}/shared/env").stdout.strip()
    assert url == f'DATABASE_URL="postgres://{APP}@{db.address}:5432/{APP}?sslmode=verify-full&sslrootcert={ca}"'
    with pytest.raises(OSError):
        socket.create_connection((db.address, 5432), timeout=5).close()
    reach = f"timeout 5 bash -c 'exec 3<>/dev/tcp/{db.address}/5432' && echo open || echo closed"
    assert root(lb, reach).stdout.strip() == "closed"
    assert root(web1, reach).stdout.strip() == "open"
    # A web server without TLS: no pg_hba line matches. The db host's own address, even as postgres: neither.
    plain = root(web1, f"cd / && runuser -u {APP} -- env PGPASSFILE=/srv/{APP}/shared/database.pgpass "
                       f"psql 'host={db.address} dbname={APP} user={APP} sslmode=disable' -c 'select 1'")
    assert plain.returncode != 0 and "no pg_hba.conf entry" in plain.stderr, plain.stderr
    own = root(db, f"cd / && runuser -u postgres -- psql 'host={db.address} dbname={APP} sslmode=require' -c "
                   "'select 1'")
    assert own.returncode != 0 and "no pg_hba.conf entry" in own.stderr, own.stderr


def test_backups_run_on_the_db_host_and_status_reads_every_server_back(layout):
    lb, web1, web2, db = (layout[name] for name in ("lb", "web1", "web2", "db"))
    out = run(layout, "backup").stdout
    assert f"backup {APP} on {db.address}" in out, out
    name = re.search(r"backups/(\S+-manual\.dump) ", out)
    assert name and name.group(1) in root(db, f"ls /srv/{APP}/backups").stdout, out
    hits = f"cd / && runuser -u postgres -- psql -X -q -t -A -d {APP} -c 'select count(*) from counter_hit'"
    before = int(root(db, hits).stdout)
    for _ in range(2):
        assert through_lb(layout, "/").status == 200
    assert int(root(db, hits).stdout) == before + 2
    restored = run(layout, "restore", name.group(1), "--yes").stdout
    assert f"restore {name.group(1)} into {APP} on {db.address}" in restored, restored
    assert int(root(db, hits).stdout) == before
    status = run(layout, "status", check=False).stdout
    for host, title in ((lb, "the load balancer of"), (db, "the database of"), (web1, ""), (web2, "")):
        assert f"{host.address}: {title}" in status, status
    assert re.search(rf"ok\s+postgresql: listening on {re.escape(db.address)}:5432 \(and its socket\), TLS on",
                     status), status
    assert f"passes to 2 web host(s): {web1.address}:80, {web2.address}:80" in status, status
    assert status.count(f"database: connected as {APP}@{APP}") == 2, status


def test_a_rollback_over_a_migration_is_refused_then_reverses_it_once(layout):
    web1, web2, repo, db = layout["web1"], layout["web2"], layout["repo"], layout["db"]
    previous = deployed(run(layout, "deploy").stdout)
    repo.commit("counter.0002_hit_agent", **{"counter__migrations__0002_hit_agent.py": GOOD_MIGRATION})
    try:
        out = run(layout, "deploy").stdout
        assert re.search(rf"1 applied once, from {re.escape(web1.address)} \(counter.0002_hit_agent\)", out), out

        def applied() -> str:
            return root(db, f"cd / && runuser -u postgres -- psql -X -q -t -A -d {APP} -c \"select count(*) from "
                            "django_migrations where name = '0002_hit_agent'\"").stdout.strip()
        assert applied() == "1"
        refused = run(layout, "rollback", check=False)
        assert refused.returncode != 0 and "--migrate-back" in refused.stderr, refused.stderr
        assert live(web1) == live(web2) != previous  # nothing switched
        back = run(layout, "rollback", "--migrate-back").stdout
        assert "1 reversed (counter.0002_hit_agent), read back from the database" in back, back
        assert f"rolled back to {previous}: every app host serves {previous}" in back, back
        assert live(web1) == live(web2) == previous and applied() == "0"
        assert through_lb(layout).body.split()[-1] == previous
    finally:
        repo.git("reset", "-q", "--hard", "HEAD~1")


def test_status_says_fail_for_a_web_server_whose_nginx_is_stopped_while_the_site_answers(layout):
    web2 = layout["web2"]
    serving(layout)
    root(web2, "systemctl stop nginx")
    try:
        stopped = run(layout, "status", check=False)
        assert stopped.returncode == 2, stopped.stdout
        assert re.search(rf"FAIL\s+web {re.escape(web2.address)}:80: GET /healthz/ at \S+ no answer", stopped.stdout)
        assert through_lb(layout).status == 200  # web1 answers meanwhile
    finally:
        root(web2, "systemctl start nginx")


def test_maintenance_is_switched_on_the_lb(layout):
    serving(layout)
    out = run(layout, "maintenance", "on").stdout
    assert f"{layout['lb'].address}: maintenance mode is on" in out, out
    assert out.count("not switched here: visitors reach the site through the load balancer") == 2, out
    try:
        page = through_lb(layout, "/")
        assert page.status == 503 and page.header("retry-after") == "300", page.headers
    finally:
        run(layout, "maintenance", "off")
    assert through_lb(layout).status == 200


def answered_by(layout, hostname: str, seconds: float) -> bool:
    """Whether, within `seconds` (bounded), a request through the load balancer is answered by `hostname`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if json.loads(through_lb(layout, "/whoami/").body)["server"] == hostname:
            return True
        time.sleep(0.5)
    return False


def test_zz_a_web_server_rebooted_under_load_costs_no_request_and_rejoins_with_its_worker(layout):
    """Last in the module (its name sorts it there too): it reboots web2."""
    lb, web2 = layout["lb"], layout["web2"]
    release = serving(layout)
    hostname = root(web2, "hostname").stdout.strip()
    assert answered_by(layout, hostname, 30), "web2 took no request before the reboot"
    with Load(lb.address, DOMAINS[0], lb.acme_root, workers=3, max_seconds=240) as load:
        web2.reboot()
        rejoined = answered_by(layout, hostname, 120)
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.samples)} failed: {failed[:5]}"
    assert rejoined, "the load balancer passed no request to web2 within 120 s of its reboot"
    assert live(web2) == release and worker_of(web2) == release, "web2 did not come back on its release and worker"
    print(f"\n{len(load.samples)} requests through the lb while web2 rebooted, none failed; web2 answers again")
