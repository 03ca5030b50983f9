"""The load balancer (role lb) and the web hosts behind it: what each server's provision writes and opens, and
how status reads the lb back. (nginx -t of these files runs on a real server in tests/integration/test_layout.py.)"""

from pathlib import Path

import pytest

from tasks import defaults, provisioning
from tasks.cli import status
from tasks.inventory import parse
from tasks.provisioning import Server, catch_all, firewall, nginx, served

APP = {"name": "mysite", "domains": ["app.test", "www.app.test"]}
URL = {"url": "postgres://mysite@10.0.0.20/mysite"}


def layout(webs=2, app=None, lb_private=None):
    """An lb at 10.0.0.10 (public 203.0.113.10 when `lb_private`) and `webs` web hosts at 10.0.0.11, ..."""
    lb = ({"address": "203.0.113.10", "private_address": lb_private, "roles": ["lb"]} if lb_private
          else {"address": "10.0.0.10", "roles": ["lb"]})
    hosts = [lb, *({"address": f"10.0.0.{11 + i}", "roles": ["web"]} for i in range(webs))]
    return parse({"app": {**APP, **(app or {})}, "hosts": hosts, "database": URL}, "x.yaml", Path("."))


def server(inv, index):
    return Server(inv, inv.hosts[index], ("ssh-ed25519 AAAA me",), lambda: None)


def titles(inv, index):
    return [step.title for step in provisioning.steps(server(inv, index))]


@pytest.mark.parametrize("webs", [1, 3])
def test_the_lb_passes_to_every_web_host_with_failover_on_idempotent_requests(webs):
    conf = nginx.site_config(server(layout(webs), 0), tls=True, nginx_version=(1, 26, 0))
    peers = [line.strip() for line in conf.splitlines() if line.strip().startswith("server 10.")]
    assert peers == [f"server 10.0.0.{11 + i}:80 max_fails={defaults.LB_MAX_FAILS} "
                     f"fail_timeout={defaults.LB_FAIL_TIMEOUT_S}s;" for i in range(webs)]
    assert "proxy_pass http://mysite_web;" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in conf
    assert "non_idempotent" not in conf and f"proxy_next_upstream_tries {webs};" in conf
    assert "no active health checks" in conf


def test_the_lb_holds_the_certificate_the_redirects_and_the_headers_of_the_site():
    conf = nginx.site_config(server(layout(), 0), tls=True, nginx_version=(1, 26, 0))
    one = parse({"app": APP, "hosts": [{"address": "10.0.0.2"}]}, "x", Path("."))
    single = nginx.site_config(server(one, 0), tls=True, nginx_version=(1, 26, 0))
    for line in ("return 301 https://$host$request_uri;", "location /.well-known/acme-challenge/ {",
                 "ssl_certificate /etc/letsencrypt/live/mysite/fullchain.pem;", "ssl_protocols TLSv1.2 TLSv1.3;",
                 'add_header Strict-Transport-Security "max-age=63072000" always;', "server_name app.test www.app.test;",
                 "proxy_set_header X-Forwarded-For $remote_addr;", "gzip off;", "client_max_body_size 20m;",
                 "if (-f /srv/mysite/state/maintenance) { return 503; }", "error_page 503 /_gangway/maintenance.html;",
                 "proxy_hide_header Strict-Transport-Security;", "listen 443 ssl;", "http2 on;"):
        assert line in conf and line in single, line
    assert "backend.conf" not in conf and "alias /srv/mysite/static/" not in conf  # the web hosts serve those
    before = nginx.site_config(server(layout(), 0), tls=False, nginx_version=(1, 26, 0))
    assert "ssl_certificate" not in before and "proxy_pass http://mysite_web;" in before


def test_http2_on_the_lb_follows_the_nginx_version_as_the_site_does():
    old = nginx.site_config(server(layout(), 0), tls=True, nginx_version=(1, 22, 1))
    assert "listen 443 ssl http2;" in old and "http2 on;" not in old


def test_the_lb_proxies_websockets_with_asgi():
    conf = nginx.site_config(server(layout(app={"server": "asgi"}), 0), tls=True, nginx_version=(1, 26, 0))
    assert "map $http_upgrade $mysite_connection_upgrade {" in conf
    assert "proxy_set_header Connection $mysite_connection_upgrade;" in conf


def test_a_web_host_behind_the_lb_serves_http_on_its_private_address_to_the_lb_alone():
    inv = layout(lb_private="10.0.0.9")
    conf = nginx.site_config(server(inv, 1), tls=True, nginx_version=(1, 26, 0))
    assert "listen 10.0.0.11:80;" in conf and "listen 127.0.0.1:80;" in conf
    assert "listen 80" not in conf and "443" not in conf and "ssl_certificate" not in conf
    assert "set_real_ip_from 10.0.0.9;" in conf and "real_ip_header X-Forwarded-For;" in conf
    assert "\t10.0.0.9 $http_x_forwarded_proto;" in conf and "\t127.0.0.1 https;" in conf
    assert "proxy_set_header X-Forwarded-Proto $mysite_forwarded_proto;" in conf
    assert "include /etc/gangway/mysite/backend.conf;" in conf and "alias /srv/mysite/static/;" in conf
    assert "gzip off;" in conf  # the lb passes pages on as they are: no compression of HTTPS pages (BREACH)
    assert "Strict-Transport-Security" not in conf.replace("proxy_hide_header Strict-Transport-Security", "")
    http_only = parse({"app": {"name": "mysite"}, "hosts": [{"address": "10.0.0.10", "roles": ["lb"]},
                                                           {"address": "10.0.0.11", "roles": ["web"]}],
                       "database": URL}, "x", Path("."))
    plain = nginx.site_config(server(http_only, 1), tls=False, nginx_version=(1, 26, 0))
    assert "\t127.0.0.1 http;" in plain and "listen 10.0.0.11:80 default_server;" in plain and "gzip off" not in plain


def test_an_ipv6_private_address_is_bracketed_where_nginx_needs_it():
    inv = parse({"app": APP, "database": URL, "hosts": [
        {"address": "203.0.113.10", "private_address": "fd00::10", "roles": ["lb"]},
        {"address": "203.0.113.11", "private_address": "fd00::11", "roles": ["web"]}]}, "x", Path("."))
    assert "server [fd00::11]:80 max_fails" in nginx.site_config(server(inv, 0), True, (1, 26, 0))
    web = nginx.site_config(server(inv, 1), True, (1, 26, 0))
    assert "listen [fd00::11]:80;" in web and "set_real_ip_from fd00::10;" in web
    assert "ip6 saddr fd00::10 tcp dport 80 accept" in firewall.ruleset(22, *firewall.openings(server(inv, 1)))


def test_the_catch_all_of_a_web_host_behind_the_lb_listens_where_its_site_does():
    conf = catch_all.config((1, 26, 0), ("10.0.0.11:80", "127.0.0.1:80"))
    assert "listen 10.0.0.11:80;" in conf and "listen 127.0.0.1:80;" in conf and "return 444;" in conf
    assert "443" not in conf.split("#")[-1] and "listen 80;" not in conf
    step = catch_all.unknown_hosts(server(layout(), 1))
    assert "listen 10.0.0.11:80;" in step.operations[0].content({nginx.NGINX_VERSION.key: (1, 26, 0)})


def test_each_server_gets_the_steps_of_its_role():
    inv = layout()
    lb, web = titles(inv, 0), titles(inv, 1)
    assert lb.count("nginx site") == 2 and "tls certificate" in lb and "nginx catch-all" in lb
    assert "server layout" in lb and not {"app user mysite", "gunicorn", "release layout"} & set(lb)
    assert "tls certificate" not in web and "certificate renewal" not in web and web.count("nginx site") == 1
    assert "release layout" in web and "server layout" not in web


def test_the_firewall_opens_the_web_to_the_lb_and_http_to_the_web_hosts_from_the_lb_only():
    inv = layout(lb_private="10.0.0.9")
    assert firewall.openings(server(inv, 0)) == ((80, 443), ())
    assert firewall.openings(server(inv, 1)) == ((), (("10.0.0.9", 80),))
    rules = firewall.ruleset(22, *firewall.openings(server(inv, 1)))
    assert "tcp dport { 22 } accept" in rules and "ip saddr 10.0.0.9 tcp dport 80 accept" in rules
    assert firewall.rules(server(inv, 1)).note == "open: 22/tcp; 80/tcp from 10.0.0.9 only"
    single = parse({"app": APP, "hosts": [{"address": "10.0.0.2"}]}, "x", Path("."))
    assert firewall.openings(Server(single, single.hosts[0], (), lambda: None)) == ((80, 443), ())


def test_a_deploy_compares_a_web_host_behind_the_lb_with_its_own_site():
    inv = layout()
    web = inv.hosts[2]
    assert served.drift(inv, served.as_provisioned(inv, web), web) == []
    # The site another host would get is not this one's: the file differs, no inventory key changed.
    assert [d.name for d in served.drift(inv, served.as_provisioned(inv, inv.hosts[1]), web)] == ["nginx site"]


def test_status_reads_the_upstream_back_and_says_which_web_host_answers():
    members = status.parse_upstream("10.0.0.11:80 0 200 /run/mysite/20261201T000000Z-abcdef1/gunicorn.sock\n"
                                    "10.0.0.12:80 7 000 \n", 0)
    found = status.upstream_checks(members, layout(), "/healthz/")
    lines = [(c.level, c.name, c.detail) for c in found]
    assert lines[0] == ("ok", "upstream", "passes to 2 web host(s): 10.0.0.11:80, 10.0.0.12:80 (read back from "
                                          "its site)")
    assert lines[1] == ("ok", "web 10.0.0.11:80", "GET /healthz/ at 10.0.0.11:80 -> 200, from 20261201T000000Z-abcdef1")
    assert lines[2][:2] == ("FAIL", "web 10.0.0.12:80") and "no answer (curl exit 7)" in lines[2][2]
    assert f"tries it again every {defaults.LB_FAIL_TIMEOUT_S} s" in lines[2][2]
    one = status.upstream_checks(status.parse_upstream("10.0.0.11:80 0 200 \n", 0), layout(), "/")
    assert one[-1].level == "FAIL" and "10.0.0.12:80 of the inventory's web hosts not in" in one[-1].detail
    assert isinstance(status.parse_upstream("garbage\n", 0), status.Unreadable)
    assert status.upstream_checks(status.parse_upstream("", 1), layout(), "/")[0].level == "FAIL"


def test_a_web_host_behind_the_lb_restarts_nginx_for_a_new_site_since_a_reload_cannot_leave_the_wildcard():
    assert nginx.site(server(layout(), 1)).after == ["systemctl restart nginx"]
    assert nginx.site(server(layout(), 0)).after == ["systemctl reload-or-restart nginx"]
