"""Redis's failure branches against the fake server: a deploy whose environment cannot get the Redis URLs, a
provision whose Redis does not come back, and `fab status` when Redis is down or cannot be asked."""

from __future__ import annotations

import io
import json

import pytest

from tasks import provisioning
from tasks.cli import deploy, status
from tasks.commands import shell
from tasks.connection.remote import Result
from tasks.inventory import App, Host, Inventory
from tasks.session.run import DeployError
from tasks.session.runner import Reporter, StepFailed, apply
from tasks.provisioning import redis
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"
WITH_REDIS = Inventory(App("mysite"), (Host("10.0.0.2"),), services=("redis",))


def test_a_deploy_without_the_password_file_stops_at_the_environment_with_the_live_release_serving():
    remote = fake.FakeRemote(fake.server(fake.release(LIVE), inventory=WITH_REDIS))
    remote.on("environment", ok=False, output="the Redis password file /etc/gangway/redis-auth.conf cannot be "
                                              "read (No such file or directory): `fab provision` makes it")
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote, WITH_REDIS), fake.a_source())
    message = str(failed.value)
    assert "its environment step failed" in message and f"{LIVE} is still serving" in message
    assert "`fab provision` makes it" in message
    assert remote.sent('"services": {"secret": "/etc/gangway/redis-auth.conf"')
    assert not remote.ran("migrate") and not remote.ran("switch")


def test_without_the_service_a_deploy_asks_for_no_service_variables():
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))
    remote.on("environment", ok=False, output="stop here")
    with pytest.raises(DeployError):
        deploy.deploy_to(fake.session(remote), fake.a_source())
    assert remote.sent('"services": null') and not remote.sent("redis-auth.conf")


class StepRemote:
    """Answers gathers from facts; the scripts fail when they contain `fail_on`."""

    class connection:
        host = "10.0.0.2"

    def __init__(self, facts, fail_on):
        self.facts, self.fail_on, self.scripts = facts, fail_on, []

    def gather(self, probes):
        return {p.key: self.facts.get(p.key) for p in probes}

    def run(self, script):
        self.scripts.append(script)
        if self.fail_on in script:
            return Result("", "Redis did not answer PING with the password: WRONGPASS invalid password", 1)
        return Result("", "", 0)


def test_a_redis_that_does_not_answer_after_the_restart_fails_the_step_with_the_reason_and_where_to_look():
    server = provisioning.Server(WITH_REDIS, WITH_REDIS.hosts[0], (), lambda: None)
    step = redis.service(server)
    remote = StepRemote({"packages:redis": {"redis-server"}, "redis_secret": "absent"}, fail_on="redis_ping.py")
    out = io.StringIO()
    with pytest.raises(StepFailed) as failed:
        apply(remote, [step], Reporter(out, terminal=False))
    message = str(failed.value)
    assert "step 'redis' failed" in message and "WRONGPASS" in message
    assert "sudo journalctl -u redis-server.service" in message
    assert "FAILED    redis" in out.getvalue() and "changed" not in out.getvalue()


def status_facts(redis_answer):
    facts = fake.server(fake.release(LIVE), inventory=WITH_REDIS)
    facts.update({"now": 1_764_547_200, "units": {f"mysite@{LIVE}.service": "active/running",
                                                   "nginx.service": "active/running",
                                                   "postgresql.service": "active/exited"},
                  "timers": [], "health": status.Health("200", 0, True), "certificate": None,
                  "disk": [], "release_kib": 1000, "memory": {}, "newest_backup": None, "updates": (0, 0),
                  "unattended": True, "reboot": None, "redis": redis_answer,
                  "database:reach": {"ok": True, "said": "mysite@mysite"}})
    return facts


@pytest.mark.parametrize("answer, code, line", [
    (status.Unreadable("could not ask Redis (exit 127): no output"), 2, "FAIL      redis: could not ask Redis"),
    (status.parse_redis("state=failed\n" + shell.REPORT + " " + json.dumps(
        {"secret": "ok", "answer": "cannot connect to 127.0.0.1:6379 (Connection refused)", "anonymous": "",
         "used_memory": "", "listening": [], "env": None}), 0), 2,
     "FAIL      redis: redis-server.service is failed: the app cannot reach its queue or cache; run `fab "
     "provision`"),
])
def test_status_fails_when_redis_is_down_or_cannot_be_asked(answer, code, line):
    out = io.StringIO()
    remote = fake.FakeRemote(status_facts(answer))
    assert status.status_on(fake.session(remote, WITH_REDIS, out=out)) == code
    assert line in out.getvalue(), out.getvalue()
    assert "needs attention: " in out.getvalue() and "redis" in out.getvalue().splitlines()[-1]
