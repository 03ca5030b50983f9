"""Process types at a deploy and a rollback, against the fake server: every failure leaves the live release's
processes running and says so from what systemd read back."""

from __future__ import annotations

import dataclasses
import io

import pytest

from tasks.cli import deploy, rollback
from tasks.inventory import App, Host, Inventory, Process
from tasks.session.run import DeployError
from tests.orchestration import fake

OLD = "20261101T000000Z-aaaaaaa"
LIVE = "20261201T000000Z-bbbbbbb"
INV = Inventory(dataclasses.replace(App("mysite"), processes=(
    Process("worker", ("celery", "-A", "mysite", "worker")),
    Process("beat", ("celery", "-A", "mysite", "beat"), singleton=True))), (Host("10.0.0.2"),))


def a_server(**kw) -> fake.FakeRemote:
    remote = fake.FakeRemote(fake.server(fake.release(OLD), fake.release(LIVE), inventory=INV, **kw))
    remote.facts["process_units"] = {f"mysite-worker@{LIVE}.service": "active", f"mysite-beat@{LIVE}.service": "active"}
    return remote.on("checks", report={"migrations": [], "venv": "reused", "warnings": []})


def test_a_worker_that_does_not_stay_up_fails_the_deploy_before_the_switch_with_its_journal():
    remote = a_server()
    remote.on("processes", ok=False, report={"process_states": {
        "mysite-worker@NEW.service": "inactive 3", f"mysite-beat@{LIVE}.service": "active 0"}},
              output="the process mysite-worker@NEW.service did not stay up for 5 s (systemd: activating, "
                     "restarted 3 time(s))\n--- the end of its log:\nImportError: No module named 'celery'")
    out = io.StringIO()
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote, INV, out), fake.a_source())
    message = str(failed.value)
    assert f"{LIVE} is still serving" in message and "ImportError: No module named 'celery'" in message
    assert f"mysite-beat@{LIVE}.service active" in message  # the stopped singleton runs again, read back
    # The script stopped at its processes step (the fake answers like the server's `set -e`): no put-back needed.
    assert remote.ran("set aside") and not remote.ran("put back")
    assert "processes running now (read back): beat, worker of " + LIVE in out.getvalue()


def test_a_switch_that_fails_after_the_singletons_moved_puts_the_old_beat_back():
    remote = a_server()
    remote.on("processes", report={"singletons_stopped": f"mysite-beat@{LIVE}.service"})
    remote.on("switch", ok=False, output="nginx rejected the switch: ...")
    remote.on("put back", report={"process_states": {f"mysite-beat@{LIVE}.service": "active 0"}})
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote, INV), fake.a_source())
    put_back = next(s for s in remote.scripts if "put back" in fake.steps_of(s))
    assert f"systemctl start mysite-beat@{LIVE}.service" in put_back
    assert f"processes put back (read back): mysite-beat@{LIVE}.service active" in str(failed.value)
    assert f"{LIVE} is still serving" in str(failed.value)


def test_a_deploy_says_what_started_and_what_stops_gracefully():
    remote = a_server()
    remote.on("processes", report={"singletons_stopped": f"mysite-beat@{LIVE}.service",
                                   "process_states": {"mysite-worker@NEW.service": "active 0"}})
    remote.on("switch", report={"processes_stopping": {f"mysite-worker@{LIVE}.service": "deactivating 0"}})
    out = io.StringIO()
    deploy.deploy_to(fake.session(remote, INV, out), fake.a_source())
    said = out.getvalue()
    assert "mysite-worker@NEW.service active" in said and f"singleton(s) stopped before they started: mysite-beat@{LIVE}" in said
    assert f"mysite-worker@{LIVE}.service deactivating" in said and "up to 60 s to finish" in said


def test_process_units_that_differ_from_the_inventory_refuse_the_deploy_before_anything_is_built():
    remote = a_server()
    remote.facts["process_files"] = {}
    with pytest.raises(DeployError) as refused:
        deploy.deploy_to(fake.session(remote, INV), fake.a_source())
    assert "Run `fab provision`" in str(refused.value) and "mysite-beat@.service" in str(refused.value)
    assert remote.scripts == [] and remote.uploads == {}


def test_a_rollback_moves_the_processes_and_a_failing_old_worker_leaves_the_live_release():
    history = [{"event": "live", "release": OLD}, {"event": "live", "release": LIVE}]
    remote = a_server(history=history)
    remote.on("processes", ok=False, output="the process mysite-worker@OLD did not stay up\nKeyError: 'x'")
    with pytest.raises(DeployError) as failed:
        rollback.rollback_on(fake.session(remote, INV), None, False)
    assert f"{OLD} did not go live; {LIVE} is still serving" in str(failed.value) and "KeyError" in str(failed.value)
    assert not remote.ran("put back") and not remote.ran("set aside")  # a rollback target is never set aside
    ok = a_server(history=history)
    assert rollback.rollback_on(fake.session(ok, INV), None, False) == OLD
    script = next(s for s in ok.scripts if "processes" in fake.steps_of(s))
    assert f"systemctl start mysite-worker@{OLD}.service" in script
