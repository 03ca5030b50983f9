"""Redis as an inventory service: the inventory key, the rendered config, the password made and read on the
server (never in a command), the server programs that write and read the app's URLs, and the provision
step's and the status line's decisions."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tasks import provisioning
from tasks.cli import status
from tasks.commands import release, services, shell
from tasks.commands.services import redis_password
from tasks.facts.steps import PathState
from tasks.inventory import InventoryError, parse
from tasks.layout import REDIS_CONFIG, REDIS_SECRET, Layout
from tasks.provisioning import redis
from tasks.commands.database import Client
from tests.unit.shellcheck import assert_shellcheck_clean as shellcheck

PASSWORD = "ab" * 32
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the password file must be root's: run as root")


def inventory(**top):
    return parse({"app": {"name": "mysite", "domains": ["app.test"]}, "hosts": [{"address": "10.0.0.2"}], **top},
                 "inventory/production.yaml", Path("."))


def server(**top):
    inv = inventory(**top)
    return provisioning.Server(inv, inv.hosts[0], ("ssh-ed25519 AAAA me",), lambda: None)


# --- the inventory ---------------------------------------------------------------------------------------------

def test_services_are_read_and_unknown_ones_refused_with_the_known_list():
    assert inventory(services=["redis"]).services == ("redis",)
    assert inventory().services == ()
    with pytest.raises(InventoryError, match=r"services\[0\]: 'valkey' is not a service gangway sets up; "
                                             r"known: redis"):
        inventory(services=["valkey"])
    with pytest.raises(InventoryError, match=r"did you mean 'redis'"):
        inventory(services=["rediss"])
    with pytest.raises(InventoryError, match=r"services\[1\]: 'redis' is listed twice"):
        inventory(services=["redis", "redis"])
    with pytest.raises(InventoryError, match=r"services: must be a list"):
        inventory(services="redis")


@pytest.mark.parametrize("name", ["REDIS_URL", "CELERY_BROKER_URL"])
def test_the_service_variables_are_gangways_own(name):
    with pytest.raises(InventoryError, match="is set by gangway itself"):
        parse({"app": {"name": "mysite", "env": {name: "redis://elsewhere"}}}, "x", Path("."))


# --- rendered files --------------------------------------------------------------------------------------------

def test_the_config_listens_on_loopback_with_an_append_only_file_and_no_password():
    text = redis.config_file()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "bind 127.0.0.1" in lines and "port 6379" in lines and "protected-mode yes" in lines
    assert "appendonly yes" in lines and "appendfsync everysec" in lines and "dir /var/lib/redis" in lines
    assert not any(line.startswith("requirepass") for line in lines)


def test_the_unit_drop_in_hands_over_the_root_only_file_as_a_credential():
    text = redis.drop_in_file()
    assert f"LoadCredential=auth.conf:{REDIS_SECRET}" in text
    assert text.splitlines()[-1] == ("ExecStart=/usr/bin/redis-server /etc/redis/redis.conf --include "
                                     f'"{REDIS_CONFIG}" --include %d/auth.conf --supervised systemd '
                                     "--daemonize no")
    assert "ExecStart=\n" in text  # Debian's own command line is replaced, not added to


# --- the password ----------------------------------------------------------------------------------------------

def test_the_password_is_made_once_root_only_through_pipes(tmp_path):
    secret = tmp_path / "redis-auth.conf"
    command = services.new_password().replace(REDIS_SECRET, str(secret))
    shellcheck(command)
    subprocess.run(["sh", "-ec", command], check=True)
    text = secret.read_text()
    assert re.fullmatch(r"requirepass [0-9a-f]{64}\n", text)
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    subprocess.run(["sh", "-ec", command], check=True)
    assert secret.read_text() == text  # kept: a second provision never changes the password
    assert list(tmp_path.iterdir()) == [secret]


@root_only
def test_the_password_file_is_read_only_when_it_is_root_only_and_well_formed(tmp_path):
    secret = tmp_path / "auth.conf"
    assert redis_password(str(secret))[1].startswith("cannot be read")
    secret.write_text(f"requirepass {PASSWORD}\n")
    secret.chmod(0o600)
    assert redis_password(str(secret)) == (PASSWORD, None)
    secret.chmod(0o644)
    assert "is not root's alone (mode 644)" in redis_password(str(secret))[1]
    secret.chmod(0o600)
    secret.write_text("requirepass $(reboot)\n")
    assert "does not hold one 'requirepass HEX' line" in redis_password(str(secret))[1]


def run_program(command: str, layout: Layout, tmp_path: Path, secret: Path) -> subprocess.CompletedProcess:
    """A built program command run here, with the server's paths pointed into tmp_path."""
    command = command.replace(layout.env_file, str(tmp_path / "env")).replace(REDIS_SECRET, str(secret))
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True)


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "auth.conf"
    path.write_text(f"requirepass {PASSWORD}\n")
    path.chmod(0o600)
    return path


@root_only
def test_the_environment_file_gets_the_urls_made_on_the_server_and_loses_them_with_the_service(tmp_path, secret):
    layout, env = Layout("mysite"), tmp_path / "env"
    env.write_text("# managed by gangway: A\nA=\"1\"\nDJANGO_SECRET_KEY='k'\nMINE=x\n")
    with_redis = services.env_services(inventory(services=["redis"]))
    command = release.env_file(layout, {"A": "1"}, services=with_redis)
    assert PASSWORD not in command and "{password}" in command
    out = run_program(command, layout, tmp_path, secret)
    assert out.returncode == 0, out.stderr
    text = env.read_text()
    assert f'REDIS_URL="redis://:{PASSWORD}@127.0.0.1:6379/0"' in text
    assert f'CELERY_BROKER_URL="redis://:{PASSWORD}@127.0.0.1:6379/1"' in text
    assert text.splitlines()[0] == "# managed by gangway: A CELERY_BROKER_URL REDIS_URL"
    assert PASSWORD not in out.stdout + out.stderr
    state = run_program(services.env_state(layout, inventory(services=["redis"])), layout, tmp_path, secret)
    assert shell.parse_reports(state.stdout) == {"exists": True, "changed": []}
    # Taken out of `services`: a provision would remove them (the read-only probe says so), and does.
    state = run_program(services.env_state(layout, inventory()), layout, tmp_path, secret)
    assert shell.parse_reports(state.stdout) == {"exists": True, "changed": ["CELERY_BROKER_URL", "REDIS_URL"]}
    assert run_program(release.env_file(layout, {"A": "1"}), layout, tmp_path, secret).returncode == 0
    assert "REDIS_URL" not in env.read_text() and "MINE=x" in env.read_text()


@root_only
def test_a_preview_tells_the_urls_change_without_their_password(tmp_path, secret):
    from tasks.cli import dryrun
    layout, env = Layout("mysite"), tmp_path / "env"
    env.write_text("# managed by gangway: A\nA=\"1\"\nDJANGO_SECRET_KEY='k'\n")
    with_redis = services.env_services(inventory(services=["redis"]))
    out = run_program(release.env_file(layout, {"A": "1"}, preview=True, services=with_redis), layout, tmp_path,
                      secret)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout
    report = shell.parse_reports(out.stdout)
    assert dryrun.env_changes(report["env_before"], report["env_after"], {"A"}) == [
        "+ CELERY_BROKER_URL (value not shown)", "+ REDIS_URL (value not shown)"]
    assert run_program(release.env_file(layout, {"A": "1"}, services=with_redis), layout, tmp_path,
                       secret).returncode == 0
    again = shell.parse_reports(run_program(release.env_file(layout, {"A": "1"}, preview=True, services=with_redis),
                                            layout, tmp_path, secret).stdout)
    assert PASSWORD not in json.dumps(again) and again["env_before"] == again["env_after"]
    secret.write_text(f"requirepass {'cd' * 32}\n")  # a new password: the preview says the values change
    changed = shell.parse_reports(run_program(release.env_file(layout, {"A": "1"}, preview=True,
                                                               services=with_redis), layout, tmp_path, secret).stdout)
    assert dryrun.env_changes(changed["env_before"], changed["env_after"], {"A"}) == [
        "~ CELERY_BROKER_URL (value changed, not shown)", "~ REDIS_URL (value changed, not shown)"]


@root_only
def test_a_stale_url_is_named_and_a_missing_password_file_stops_the_write(tmp_path, secret):
    layout, env = Layout("mysite"), tmp_path / "env"
    env.write_text('REDIS_URL="redis://:old@127.0.0.1:6379/0"\n')
    with_redis = inventory(services=["redis"])
    state = run_program(services.env_state(layout, with_redis), layout, tmp_path, secret)
    assert shell.parse_reports(state.stdout)["changed"] == ["CELERY_BROKER_URL", "REDIS_URL"]
    before = env.read_text()
    out = run_program(release.env_file(layout, {}, services=services.env_services(with_redis)), layout, tmp_path,
                      tmp_path / "none")
    assert out.returncode != 0 and "the Redis password file" in out.stderr and "fab provision" in out.stderr
    assert env.read_text() == before


def test_if_exists_leaves_a_missing_environment_file_missing(tmp_path, secret):
    layout = Layout("mysite")
    out = run_program(release.env_file(layout, {"A": "1"}, if_exists=True), layout, tmp_path, secret)
    assert out.returncode == 0 and not (tmp_path / "env").exists()
    state = run_program(services.env_state(layout, inventory()), layout, tmp_path, secret)
    assert shell.parse_reports(state.stdout) == {"exists": False, "changed": []}


# --- the ping program, against a fake Redis --------------------------------------------------------------------

class FakeRedis:
    """Answers RESP on 127.0.0.1: AUTH with PASSWORD, then PING and INFO; or everything without it (`open`)."""

    def __init__(self, open_=False):
        self.open = open_
        self.received = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.client, args=(conn,), daemon=True).start()

    def client(self, conn):
        reader, authed = conn.makefile("rb"), self.open
        with conn:
            while line := reader.readline():
                words = [reader.readline() and reader.readline().rstrip(b"\r\n").decode()
                         for _ in range(int(line[1:]))]
                self.received.append(words)
                if words[0] == "AUTH":
                    authed = words[1] == PASSWORD
                    conn.sendall(b"+OK\r\n" if authed else b"-WRONGPASS invalid password\r\n")
                elif not authed:
                    conn.sendall(b"-NOAUTH Authentication required.\r\n")
                elif words[0] == "PING":
                    conn.sendall(b"+PONG\r\n")
                else:
                    body = b"# Memory\r\nused_memory_human:1.02M\r\n"
                    conn.sendall(b"$%d\r\n%s\r\n" % (len(body), body))

    def close(self):
        self.server.close()


def ping(tmp_path, secret, port, require=False):
    layout = Layout("mysite")
    command = services.ping(layout, require=require).replace('"port": 6379', f'"port": {port}')
    return run_program(command, layout, tmp_path, secret)


@root_only
def test_ping_authenticates_on_the_socket_and_reads_the_apps_environment(tmp_path, secret):
    fake = FakeRedis()
    try:
        (tmp_path / "env").write_text(f'REDIS_URL="redis://:{PASSWORD}@127.0.0.1:{fake.port}/0"\n')
        out = ping(tmp_path, secret, fake.port, require=True)
    finally:
        fake.close()
    report = shell.parse_reports(out.stdout)
    assert out.returncode == 0, out.stderr
    assert report["answer"] == "PONG" and report["anonymous"].startswith("NOAUTH")
    assert report["used_memory"] == "1.02M" and "127.0.0.1" in report["listening"]
    assert report["env"] == {"CELERY_BROKER_URL": "missing", "REDIS_URL": "stale"}  # the test's port, not 6379
    assert ["AUTH", PASSWORD] in fake.received and PASSWORD not in out.stdout + out.stderr


@root_only
def test_ping_required_fails_when_redis_answers_without_the_password(tmp_path, secret):
    fake = FakeRedis(open_=True)
    try:
        out = ping(tmp_path, secret, fake.port, require=True)
    finally:
        fake.close()
    assert out.returncode == 1 and "Redis answered a client without the password: PONG" in out.stderr


def test_ping_says_why_when_nothing_answers(tmp_path, secret):
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    out = ping(tmp_path, secret, port, require=True)
    assert out.returncode == 1 and "did not answer PING" in out.stderr
    assert "cannot connect to 127.0.0.1" in shell.parse_reports(out.stdout)["answer"]


# --- the provision step's decisions ----------------------------------------------------------------------------

def test_the_password_is_made_when_absent_and_made_root_only_when_not():
    assert redis.secret_changes("600 root root", {}) == []
    [made] = redis.secret_changes("absent", {})
    assert "password made on the server" in made.what and made.commands == (services.new_password(),)
    [fixed] = redis.secret_changes("644 root redis", {})
    assert "was 644 root redis" in fixed.what and any("chmod 600" in c for c in fixed.commands)


GOOD = {"enabled": True, "answer": "PONG", "anonymous": "NOAUTH Authentication required.",
        "listening": ["127.0.0.1"], "secret": "ok", "used_memory": "1M", "env": None}


@pytest.mark.parametrize("found", [None, {**GOOD, "enabled": False}, {**GOOD, "answer": "WRONGPASS"},
                                   {**GOOD, "anonymous": "PONG"}, {**GOOD, "listening": ["0.0.0.0"]}])
def test_redis_is_restarted_unless_it_serves_as_it_should(found):
    assert redis.service_changes(GOOD, {}) == []
    assert [c.what for c in redis.service_changes(found, {})] == ["redis-server.service enabled and restarted"]


def test_the_step_restarts_and_reads_back_after_any_change():
    step = redis.service(server(services=["redis"]))
    assert step.after[-1] == services.ping(Layout("mysite"), require=True)
    assert "systemctl restart redis-server.service" in step.after
    facts = {"packages:redis": {"redis-server"}, "redis_secret": "600 root root", "redis_ping": GOOD,
             **{f"path:{op.path}": PathState("regular file", "644", "root", "root",
                                              __import__("hashlib").sha256(op.wanted({})).hexdigest())
                for op in step.operations if hasattr(op, "wanted")},
             "path:/etc/systemd/system/redis-server.service.d": PathState("directory", "755", "root", "root")}
    assert step.plan(facts).script is None  # a second provision changes nothing
    changed = step.plan({**facts, "redis_secret": "absent"})
    shellcheck(changed.script)
    assert "REDISCLI_AUTH" not in changed.script and not re.search(r"requirepass [0-9a-f]{8}", changed.script)


def test_without_the_service_the_step_changes_nothing_and_says_what_is_left():
    step = redis.service(server())
    assert step.plan({"packages:redis": set()}).script is None
    assert step.plan({"packages:redis": set()}).note == "not in the inventory's services"
    note = step.plan({"packages:redis": {"redis-server"}}).note
    assert "still installed, with its data in /var/lib/redis" in note and "apt-get purge redis-server" in note


def test_the_environment_step_writes_only_when_a_service_variable_differs():
    with_redis, without = redis.environment(server(services=["redis"])), redis.environment(server())
    assert with_redis.plan({"env_services": {"exists": True, "changed": []}}).script is None
    assert with_redis.plan({"env_services": {"exists": True, "changed": ["DJANGO_HTTPS"]}}).script is None
    plan = with_redis.plan({"env_services": {"exists": True, "changed": ["REDIS_URL"]}})
    assert plan.changes[0].what.startswith("/srv/mysite/shared/env: REDIS_URL written")
    assert '"if_exists": true' in plan.script and '"secret": "/etc/gangway/redis-auth.conf"' in plan.script
    gone = without.plan({"env_services": {"exists": True, "changed": ["CELERY_BROKER_URL", "REDIS_URL"]}})
    assert gone.changes[0].what.startswith("/srv/mysite/shared/env: CELERY_BROKER_URL, REDIS_URL removed")
    assert '"services": null' in gone.script
    # Could not be read: written (if the file exists), and a failure then says why; never taken for "fine".
    assert with_redis.plan({"env_services": None}).script is not None
    absent = with_redis.plan({"env_services": {"exists": False, "changed": []}})
    assert absent.script is None and "the first deploy writes it" in absent.note


def test_every_probe_of_the_redis_steps_only_reads():
    from tests.unit.test_dryrun import WRITES
    s = server(services=["redis"])
    for step in provisioning.steps(s):
        for probe in step.probes():
            command = probe.command.replace("2>/dev/null", "").replace("2>&1", "")
            assert not WRITES.search(command), f"{probe.key} may write: {probe.command}"
    assert {"redis_ping", "redis_secret", "env_services", "packages:redis", "packages"} <= {
        p.key for step in provisioning.steps(s) for p in step.probes()}


# --- fab status ------------------------------------------------------------------------------------------------

def found(**changes):
    return {**GOOD, "state": "active", **changes}


@pytest.mark.parametrize("answer, level, text", [
    (status.Unreadable("could not ask Redis (exit 127): python3: not found"), "FAIL", "could not ask Redis"),
    (found(state="inactive"), "FAIL", "redis-server.service is inactive: the app cannot reach"),
    (found(state=""), "FAIL", "is not installed"),
    (found(secret="cannot be read (No such file or directory): `fab provision` makes it"), "FAIL",
     "the password file /etc/gangway/redis-auth.conf cannot be read"),
    (found(answer="WRONGPASS invalid password"), "FAIL", "did not answer PING with the app's password: WRONGPASS"),
    (found(anonymous="PONG"), "FAIL", "answers a client without the password"),
    (found(listening=["0.0.0.0", "127.0.0.1"]), "FAIL", "listens beyond the loopback address: 0.0.0.0"),
    (found(env={"REDIS_URL": "stale", "CELERY_BROKER_URL": "ok"}), "WARN", "shared/env has REDIS_URL stale"),
    (found(env={"REDIS_URL": "ok", "CELERY_BROKER_URL": "ok"}), "ok",
     "redis-server.service active, answers PING with the app's password, 1M used"),
    (found(), "ok", "shared/env comes with the first deploy"),
])
def test_the_status_line(answer, level, text):
    check = status.redis_check(answer)
    assert check.level == level and check.name == "redis" and text in check.detail
    if level == "FAIL" and not isinstance(answer, dict) or level == "FAIL" and answer.get("secret") == "ok":
        assert "fab provision" in check.detail


def test_the_status_probe_is_asked_only_when_the_inventory_has_the_service():
    layout = Layout("mysite")
    keys = [p.key for p in status.status_probes(layout, Client(layout.app), "app.test", "/", True)]
    assert "redis" not in keys
    [probe] = [p for p in status.status_probes(layout, Client(layout.app), "app.test", "/", True, ("redis",)) if p.key == "redis"]
    report = "@gangway " + json.dumps({**GOOD})
    assert status.parse_redis(f"state=active\n{report}\n", 0)["state"] == "active"
    assert isinstance(status.parse_redis("state=active\n", 1), status.Unreadable)
    assert PASSWORD not in probe.command and "{password}" in probe.command


def test_a_dry_run_on_a_fresh_server_shows_the_redis_files_and_runs_nothing():
    import io
    from tasks.cli import dryrun
    from tasks.session.runner import Reporter
    from tests.unit.test_dryrun import FakeRemote, fresh
    out = io.StringIO()
    recap = dryrun.preview(FakeRemote(fresh), provisioning.steps(server(services=["redis"])), Reporter(out))
    text = out.getvalue()
    assert "redis" in recap.changed
    assert f"+++ {REDIS_CONFIG} (as provision would write it)" in text and "+appendonly yes" in text
    assert "LoadCredential=auth.conf:/etc/gangway/redis-auth.conf" in text
    assert "od -An -vtx1 -N32 /dev/urandom" in text  # how the password would be made; there is none to show
