"""`fab provision` on a fresh Debian 13 server, checked from outside as a visitor, an attacker and the
operator would see it."""

from __future__ import annotations

import re
import shlex
import ssl
import time
from contextlib import closing

import paramiko
import pytest

from tasks import defaults
from tests.integration.conftest import APP, DOMAINS
from tests.outside import http_get, https_get, port_open, tls_version


def test_first_run_changes_everything_and_reports_it(trixie):
    out = trixie.first_run.stdout
    assert re.search(r"recap 10\.213\.\d+\.2: \d+ steps, \d+ changed", out), out
    for step in ("system packages", "postgresql", "nginx site", "tls certificate", "firewall", "ssh hardening"):
        assert re.search(rf"changed\s+{step}", out), f"{step} not changed on a fresh server:\n{out}"


def test_https_verifies_against_the_acme_roots_and_shows_the_placeholder(trixie):
    for name in DOMAINS:
        response = https_get(trixie.host.address, name, trixie.host.acme_root)
        assert response.status == 200
        assert "ready for its first deploy" in response.body
        assert response.header("strict-transport-security") == "max-age=63072000"
        assert response.header("x-content-type-options") == "nosniff"
        assert "nginx/" not in (response.header("server") or "")


def test_a_client_that_does_not_trust_the_ca_is_refused(trixie):
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(trixie.host.address, DOMAINS[0], trixie.host.acme_ca_bundle)  # pebble's API cert, not its root


def test_tls_1_2_and_1_3_only(trixie):
    address, name, root = trixie.host.address, DOMAINS[0], trixie.host.acme_root
    assert tls_version(address, name, root, ssl.TLSVersion.TLSv1_3)
    assert tls_version(address, name, root, ssl.TLSVersion.TLSv1_2)
    out = trixie.root(f"openssl s_client -connect 127.0.0.1:443 -servername {name} -tls1_1 </dev/null 2>&1")
    assert out.returncode != 0


def test_http_redirects_to_https_but_serves_acme_challenges(trixie):
    response = http_get(trixie.host.address, DOMAINS[1], "/some/page?x=1")
    assert response.status == 301
    assert response.header("location") == f"https://{DOMAINS[1]}/some/page?x=1"
    trixie.root("echo token-content > /var/www/gangway-acme/.well-known-test 2>/dev/null; "
                "mkdir -p /var/www/gangway-acme/.well-known/acme-challenge && "
                "echo token-content > /var/www/gangway-acme/.well-known/acme-challenge/t1")
    challenge = http_get(trixie.host.address, DOMAINS[0], "/.well-known/acme-challenge/t1")
    assert challenge.status == 200 and challenge.body.strip() == "token-content"


def test_only_ssh_http_and_https_are_reachable(trixie):
    address = trixie.host.address
    # Something listens on 8081 inside: only the firewall can keep it from the outside.
    trixie.root("systemd-run --unit=gangway-probe-listener python3 -m http.server 8081 --bind 0.0.0.0")
    try:
        deadline = time.monotonic() + 10
        while trixie.root("curl -fsS -o /dev/null http://127.0.0.1:8081/").returncode != 0:
            assert time.monotonic() < deadline, "the probe listener did not start"
            time.sleep(0.2)
        assert not port_open(address, 8081)
    finally:
        trixie.root("systemctl stop gangway-probe-listener")
    assert all(port_open(address, port) for port in (22, 80, 443))
    assert not any(port_open(address, port, timeout=1) for port in (5432, 8000, 25, 3306, 6379, 111))
    rules = trixie.root("nft list ruleset").stdout
    assert "policy drop" in rules and "tcp dport { 22, 80, 443 } accept" in rules


def _ssh_client():
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    return client


def test_root_login_and_password_login_are_refused(trixie):
    host = trixie.host
    # Each refused client is closed at once: one left open until sshd's LoginGraceTime earns this address a
    # penalty (OpenSSH 10's PerSourcePenalties), and the tests after this one would be turned away for a while.
    with closing(_ssh_client()) as client, pytest.raises(paramiko.AuthenticationException):
        client.connect(host.address, username="root", key_filename=str(host.ssh_key),
                       look_for_keys=False, allow_agent=False, timeout=10)
    with closing(_ssh_client()) as client, pytest.raises(paramiko.BadAuthenticationType) as caught:
        client.connect(host.address, username=host.password_user, password=host.password,
                       look_for_keys=False, allow_agent=False, timeout=10)
    assert caught.value.allowed_types == ["publickey"]


def test_the_deploy_user_logs_in_with_the_key_and_has_sudo(trixie):
    out = trixie.ssh("id -un; sudo -n id -un")
    assert out.stdout.split() == ["deploy", "root"]


def test_the_app_user_reaches_its_database_over_the_socket_without_a_password(trixie):
    out = trixie.root(f"cd /tmp && runuser -u {APP} -- psql -XtAc 'select current_user, current_database()'")
    assert out.returncode == 0 and out.stdout.strip() == f"{APP}|{APP}", out.stderr
    # No TCP listener at all, so nothing reaches PostgreSQL over the network, not even from the server itself.
    tcp = trixie.root(f"cd /tmp && runuser -u {APP} -- psql -h 127.0.0.1 -XtAc 'select 1'")
    assert tcp.returncode != 0
    assert ":5432" not in trixie.root("ss -Hltn").stdout
    # Another local user is not let in as the app.
    assert trixie.root(f"cd /tmp && runuser -u deploy -- psql -d {APP} -XtAc 'select 1'").returncode != 0


def test_the_app_user_cannot_log_in_and_owns_only_media(trixie):
    passwd = trixie.root(f"getent passwd {APP}").stdout
    assert passwd.strip().endswith("/usr/sbin/nologin")
    owned = trixie.root(f"find /srv/{APP} -user {APP}").stdout.split()
    assert owned == [f"/srv/{APP}/shared/media"]


def test_the_gunicorn_unit_and_nginx_config_verify_on_the_server(trixie):
    release = f"/srv/{APP}/releases/verify-probe"
    trixie.root(f"mkdir -p {release}/.venv/bin && printf '#!/bin/sh\\n' > {release}/.venv/bin/gunicorn && "
                f"chmod 755 {release}/.venv/bin/gunicorn")
    try:
        verify = trixie.root(f"systemd-analyze verify {APP}@verify-probe.service 2>&1")
    finally:
        trixie.root(f"rm -rf {release}")
    assert verify.returncode == 0, verify.stdout
    assert APP not in verify.stdout, verify.stdout  # no complaint about our unit
    assert trixie.root("nginx -t").returncode == 0


def test_security_updates_time_sync_and_certificate_renewal_are_on(trixie):
    assert 'Unattended-Upgrade "1"' in trixie.root("cat /etc/apt/apt.conf.d/20auto-upgrades").stdout
    assert trixie.root("systemctl is-enabled systemd-timesyncd").stdout.strip() == "enabled"
    assert trixie.root("systemctl is-enabled certbot.timer").stdout.strip() == "enabled"
    renewal = trixie.root(f"cat /etc/letsencrypt/renewal/{APP}.conf").stdout
    assert "renew_hook = systemctl reload nginx" in renewal
    assert "REQUESTS_CA_BUNDLE" in trixie.root("systemctl show certbot.service -p Environment").stdout


def test_uv_is_root_owned_in_its_own_venv_and_its_cache_is_the_build_users(trixie):
    out = trixie.root(f"/opt/gangway/uv/bin/uv --version && stat -c '%U %a' /opt/gangway/uv/bin/uv "
                      f"/var/cache/gangway/{APP}/uv")
    said, tool, cache = out.stdout.splitlines()
    version = tuple(int(p) for p in re.match(r"uv ([\d.]+)", said).group(1).split("."))
    least, below = defaults.UV_VERSIONS
    assert least <= version < below, said
    assert tool == "root 755" and cache == f"{APP}_build 700", out.stdout


def test_a_missing_uv_is_installed_again_and_an_installed_one_left_alone(trixie):
    trixie.root("rm -rf /opt/gangway/uv")
    out = trixie.provision().stdout
    assert re.search(rf"changed\s+uv: uv none -> {re.escape(defaults.UV)} from PyPI", out), out
    assert trixie.root("/opt/gangway/uv/bin/uv --version").returncode == 0
    again = trixie.provision().stdout
    assert re.search(r"ok\s+uv: uv 0\.\d+\.\d+ in /opt/gangway/uv", again), again


def test_a_second_run_changes_nothing_and_says_so(trixie):
    out = trixie.provision().stdout
    recap = re.search(r"recap \S+: (\d+) steps, (\d+) changed, (\d+) unchanged; (\d+) remote commands? over "
                      r"(\d+) SSH connection", out)
    assert recap, out
    steps, changed, unchanged, commands, connections = map(int, recap.groups())
    assert changed == 0 and unchanged == steps, out
    # The deploy lock, held on a channel of its own for the run, and every fact in one batched round trip.
    assert commands == 2 and connections == 1, out
    assert not [line for line in out.splitlines() if line.startswith("  changed")], out


def test_a_rejected_nginx_config_is_rolled_back_and_the_site_keeps_serving(trixie):
    """A config nginx rejects never replaces a working one, and the run says why it stopped."""
    site = f"/etc/nginx/sites-available/{APP}"
    before = trixie.root(f"cat {site}").stdout
    trixie.root(f"echo '# drift' >> {site}; echo 'this is not nginx syntax;' > /etc/nginx/conf.d/broken.conf")
    try:
        out = trixie.provision(check=False)
        assert out.returncode != 0
        assert "nginx site" in out.stderr and "rejected" in out.stderr and "broken.conf" in out.stderr, out.stderr
        assert trixie.root(f"cat {site}").stdout == before + "# drift\n"  # the previous file, not the new one
        assert https_get(trixie.host.address, DOMAINS[0], trixie.host.acme_root).status == 200
    finally:
        trixie.root("rm -f /etc/nginx/conf.d/broken.conf")
    out = trixie.provision().stdout
    assert re.search(r"changed\s+nginx site", out) and trixie.root(f"cat {site}").stdout == before


def test_a_server_without_etc_hosts_gets_one_with_localhost_and_its_name(trixie):
    """Minimal container images come without /etc/hosts: provision writes Debian's, instead of an awk error."""
    before = trixie.root("cat /etc/hosts").stdout
    name = trixie.root("hostname").stdout.strip()
    trixie.root("rm /etc/hosts")
    try:
        out = trixie.provision().stdout
        assert re.search(rf"changed\s+hostname: /etc/hosts created \(localhost and {re.escape(name)}\)", out), out
        hosts = trixie.root("cat /etc/hosts").stdout.splitlines()
        assert "127.0.0.1\tlocalhost" in hosts and f"127.0.1.1\t{name}" in hosts, hosts
        assert trixie.root("stat -c '%a %U' /etc/hosts").stdout.split() == ["644", "root"]
        assert trixie.root("getent hosts localhost").returncode == 0
        assert "unable to resolve" not in trixie.root("true").stderr
    finally:
        trixie.root(f"printf %s {shlex.quote(before)} > /etc/hosts")
