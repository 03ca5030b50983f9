"""Redis as a service of the inventory (`services: [redis]`) on a real server: provision installs Debian's
redis-server on the loopback address with a password made on the server; the app reaches it as its own user
with REDIS_URL and CELERY_BROKER_URL from its environment (no deploy needed after the provision); a client
without the password is refused and nothing listens beyond the loopback address; `fab status` shows it; a
second provision changes nothing and `-v` prints no password; taken out of `services`, the variables go and
the data stays."""

from __future__ import annotations

import json
import re
import socket

import pytest

from tests.integration.appsite import make_site
from tests.integration.conftest import APP

# A management command the test's copy of the app adds: Redis over a plain socket (no client library), with
# the URLs the app's environment holds, as the process that runs it.
PING = '''import getpass
import json
import os
import socket
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand


def ask(url, *commands):
    parts = urlsplit(url)
    replies = []
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for words in (("AUTH", parts.password), ("SELECT", parts.path.strip("/")), *commands):
            sock.sendall(b"".join([b"*%d\\r\\n" % len(words)]
                                  + [b"$%d\\r\\n%s\\r\\n" % (len(w.encode()), w.encode()) for w in words]))
            line = reader.readline().decode().rstrip()
            if line.startswith("$") and line != "$-1":
                line = reader.read(int(line[1:]) + 2)[:-2].decode()
            replies.append(line)
    return replies


class Command(BaseCommand):
    help = "Ping Redis with the app's REDIS_URL and CELERY_BROKER_URL."

    def handle(self, *args, **options):
        print("gw-redis " + json.dumps({
            "user": getpass.getuser(),
            "cache": ask(os.environ["REDIS_URL"], ("PING",), ("SET", "gw", "cache"), ("GET", "gw")),
            "broker": ask(os.environ["CELERY_BROKER_URL"], ("GET", "gw"), ("DBSIZE",)),
        }))
'''


# redis-cli with the password in its environment (REDISCLI_AUTH), never on its command line.
AUTHENTICATED = "REDISCLI_AUTH=\"$(cut -d' ' -f2 /etc/gangway/redis-auth.conf)\" redis-cli"


def with_services(site, services) -> None:
    """The site's inventory with (or without) a top-level `services` list."""
    text = re.sub(r"(?m)^services:.*\n", "", site.inventory.read_text())
    site.inventory.write_text(text + (f"services: {json.dumps(services)}\n" if services else ""))


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "redis")
    (site.repo.path / "counter/management/commands").mkdir(parents=True)
    site.repo.write("counter/management/__init__.py", "")
    site.repo.write("counter/management/commands/__init__.py", "")
    site.repo.write("counter/management/commands/gw_redis.py", PING)
    site.repo.commit("a management command that pings Redis")
    site.deploy()
    return site


def password(site) -> str:
    return site.root("cut -d' ' -f2 /etc/gangway/redis-auth.conf").strip()


def test_provision_sets_up_redis_with_a_password_made_on_the_server(site):
    with_services(site, ["redis"])
    out = site.fab("provision").stdout
    assert re.search(r"changed\s+redis: .*read back after the restart: answers PING with the password", out), out
    assert re.search(r"changed\s+app environment \(services\): /srv/\S+/shared/env: CELERY_BROKER_URL, "
                     r"REDIS_URL written", out), out
    assert site.root("stat -c '%a %U %G' /etc/gangway/redis-auth.conf").strip() == "600 root root"
    secret = password(site)
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert secret not in out
    # Never in a command line, the unit's settings or the journal.
    assert secret not in site.root("ps -eo args")
    assert secret not in site.root("systemctl show redis-server.service")
    assert secret not in site.root("journalctl -q -u redis-server.service --no-pager")
    assert site.root("systemctl is-enabled redis-server.service").strip() == "enabled"


def test_the_app_reaches_redis_as_its_own_user_with_its_environment(site):
    out = site.fab("manage", "--", "gw_redis").stdout
    [line] = [line for line in out.splitlines() if line.startswith("gw-redis ")]
    found = json.loads(line.split(" ", 1)[1])
    assert found["user"] == APP
    assert found["cache"] == ["+OK", "+OK", "+PONG", "+OK", "cache"]
    # The broker's database is another one: clearing the cache never empties Celery's queue.
    assert found["broker"][:3] == ["+OK", "+OK", "$-1"]
    env = site.root(f"grep -E '^(REDIS_URL|CELERY_BROKER_URL)=' /srv/{APP}/shared/env")
    assert f'REDIS_URL="redis://:{password(site)}@127.0.0.1:6379/0"' in env
    assert f'CELERY_BROKER_URL="redis://:{password(site)}@127.0.0.1:6379/1"' in env


def test_a_client_without_the_password_is_refused_and_nothing_listens_beyond_loopback(site):
    assert site.root("redis-cli -h 127.0.0.1 ping").strip().startswith("NOAUTH")
    listening = site.root("ss -Hltn 'sport = :6379'").split("\n")
    assert {line.split()[3] for line in listening if line.strip()} == {"127.0.0.1:6379"}
    with pytest.raises(OSError):  # from this machine, to the server's own address
        socket.create_connection((site.server.host.address, 6379), timeout=3).close()


def test_status_shows_redis(site):
    out = site.fab("status", check=False).stdout
    assert re.search(r"ok\s+redis: redis-server\.service active, answers PING with the app's password, "
                     r"\S+ used", out), out


def test_a_second_provision_changes_nothing_and_verbose_prints_no_password(site):
    out = site.fab("provision", "-v").stdout
    assert re.search(r"recap \S+: \d+ steps, 0 changed", out), out
    assert re.search(r"ok\s+redis: redis-server\.service on 127\.0\.0\.1:6379", out), out
    assert password(site) not in out


def test_taken_out_of_services_the_variables_go_and_the_data_stays(site):
    site.root(f"{AUTHENTICATED} set kept yes")
    with_services(site, None)
    out = site.fab("provision").stdout
    assert re.search(r"changed\s+app environment \(services\): \S+: CELERY_BROKER_URL, REDIS_URL removed", out), out
    assert re.search(r"ok\s+redis: not in the inventory's services; redis-server is still installed, with its "
                     r"data in /var/lib/redis", out), out
    assert "REDIS_URL" not in site.root(f"cat /srv/{APP}/shared/env")
    assert site.root("systemctl is-active redis-server.service").strip() == "active"
    assert site.root(f"{AUTHENTICATED} get kept").strip() == "yes"
    again = site.fab("provision").stdout
    assert re.search(r"recap \S+: \d+ steps, 0 changed", again), again
    assert not re.search(r"^\s+\S+\s+redis:", site.fab("status", check=False).stdout, re.M)
