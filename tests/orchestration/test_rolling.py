"""A rolling deploy and a rollback across two web hosts, against two fake servers: the release is built on both,
migrated once, switched host by host behind the health gate; a host that fails puts the switched ones back, and
every message names the host and says what each one serves, read back."""

from __future__ import annotations

import io

import pytest

from tasks.cli import rolling
from tasks.inventory import App, Host, Inventory
from tasks.session.run import DeployError, Session
from tasks.session.runner import Reporter
from tests.orchestration import fake

PREVIOUS = "20261201T000000Z-aaaaaaa"
LIVE = "20261202T000000Z-bbbbbbb"
INITIAL = ["notes.0001_initial"]
WITH_TAG = ["notes.0001_initial", "notes.0002_tag"]
LAYOUT = Inventory(App("mysite"), (Host("10.0.0.11", roles=("web", "db")), Host("10.0.0.12", roles=("web",))))


def a_host(applied=INITIAL) -> fake.FakeRemote:
    facts = fake.server(fake.release(PREVIOUS, INITIAL), fake.release(LIVE, INITIAL), live=LIVE,
                        running=[LIVE, PREVIOUS], applied=applied, inventory=LAYOUT)
    return (fake.FakeRemote(facts)
            .on("checks", report={"migrations": WITH_TAG, "venv": "reused", "warnings": []})
            .on("backup", report={"backup": "/srv/mysite/backups/before-migrate.dump"})
            .on("start", report={"health": "200"})
            .on("switch", report={"through_nginx": "200", "repaired": False}))


def sessions(*remotes: fake.FakeRemote) -> tuple[list[Session], io.StringIO]:
    out = io.StringIO()
    reporter = Reporter(out, terminal=False)
    return [Session(LAYOUT.seen_from(host), host, remote, reporter)
            for host, remote in zip(LAYOUT.hosts, remotes)], out


def switches(remote: fake.FakeRemote) -> int:
    """How many times the host was asked to start a release and switch to it (go_live's script)."""
    return sum("switch" in fake.steps_of(s) for s in remote.scripts)


def test_a_rolling_deploy_builds_everywhere_migrates_once_and_switches_every_host():
    first, second = a_host(), a_host()
    all_, out = sessions(first, second)
    release_id = rolling.deploy_all(all_, fake.a_source())
    text = out.getvalue()
    assert first.ran("unpack") and second.ran("unpack") and first.uploads and second.uploads
    assert first.ran("migrate") and not second.ran("migrate")  # one database: migrated once
    assert first.ran("backup") and not second.ran("backup")
    assert switches(first) == switches(second) == 1
    assert "1 applied once, from 10.0.0.11 (notes.0002_tag)" in text
    assert f"deploy {release_id} (main = abcdef1) to 2 app hosts (10.0.0.11, 10.0.0.12), 1 at a time" in text
    # Each host's lines of the build come together, under its address.
    assert text.index("10.0.0.11") < text.index("release") and f"deployed {release_id} to 2 hosts" in text


def test_a_host_that_fails_its_health_check_puts_the_switched_ones_back_and_is_named():
    first, second = a_host(applied=WITH_TAG), a_host(applied=WITH_TAG)  # nothing to migrate
    second.on("start", ok=False, output="GET /healthz/ -> 502 after 30 s")
    all_, out = sessions(first, second)
    with pytest.raises(DeployError) as failed:
        rolling.deploy_all(all_, fake.a_source())
    message = str(failed.value)
    assert "10.0.0.12 failed its switch, so no further host switched" in message
    assert "502 after 30 s" in message
    assert f"10.0.0.11 switched back to {LIVE}" in message
    assert f"Read back now: every app host serves {LIVE}" in message
    assert switches(first) == 2 and switches(second) == 1  # switched, then back; the second failed at its start
    assert first.ran("set aside") and second.ran("set aside")


def test_a_failed_switch_after_migrating_reverses_the_migrations_once_after_switching_back():
    first, second = a_host(), a_host()
    first.then_facts(applied=WITH_TAG)  # after the migrate, the database has the new migration
    second.on("start", ok=False, output="health check timed out")
    first.on("reverse", report={})
    all_, out = sessions(first, second)
    with pytest.raises(DeployError) as failed:
        rolling.deploy_all(all_, fake.a_source())
    message = str(failed.value)
    assert first.ran("migrate") and first.ran("reverse") and not second.ran("reverse")
    back, reversed_ = (next(i for i, s in enumerate(first.scripts) if step in fake.steps_of(s))
                       for step in ("switch", "reverse"))
    assert back < reversed_  # the new code stops serving before its migrations are reversed
    assert "10.0.0.12 failed its switch" in message


def test_a_build_that_fails_on_one_host_switches_nothing_anywhere():
    first, second = a_host(), a_host()
    second.on("pip", ok=False, output="ERROR: No matching distribution found for django==9.9")
    all_, out = sessions(first, second)
    with pytest.raises(DeployError) as failed:
        rolling.deploy_all(all_, fake.a_source())
    message = str(failed.value)
    assert f"went live nowhere; every app host serves {LIVE}" in message
    assert "It failed to build on 10.0.0.12" in message and "10.0.0.11:" not in message
    assert not first.ran("migrate") and not first.ran("backup") and switches(first) == switches(second) == 0
    assert first.ran("set aside") and second.ran("set aside")


def test_a_refusal_on_one_host_builds_nothing_anywhere():
    import dataclasses
    from tasks.provisioning import served
    first, second = a_host(), a_host()
    asgi = dataclasses.replace(LAYOUT, app=dataclasses.replace(LAYOUT.app, server="asgi"))
    second.facts["served_files"] = served.as_provisioned(asgi)  # provisioned before app.server changed
    all_, _ = sessions(first, second)
    with pytest.raises(DeployError) as failed:
        rolling.deploy_all(all_, fake.a_source())
    assert not first.uploads and not second.uploads and not first.scripts and not second.scripts
    assert str(failed.value).startswith("on 10.0.0.12: the inventory's `app.wsgi_module` and `app.server` changed"), \
        str(failed.value)


def test_a_rollback_moves_every_host_to_the_same_release():
    first, second = a_host(), a_host()
    all_, out = sessions(first, second)
    assert rolling.rollback_all(all_, None, False) == PREVIOUS
    assert switches(first) == switches(second) == 1
    assert f"rollback of 2 app hosts to {PREVIOUS} (now: every app host serves {LIVE})" in out.getvalue()


def test_a_rollback_over_a_migration_is_refused_on_every_host_before_any_switch():
    first, second = a_host(applied=WITH_TAG), a_host(applied=WITH_TAG)
    all_, _ = sessions(first, second)
    with pytest.raises(DeployError) as refused:
        rolling.rollback_all(all_, None, False)
    assert f"fab rollback --to {PREVIOUS} --migrate-back" in str(refused.value)
    assert switches(first) == switches(second) == 0


def test_a_rollback_to_a_release_one_host_lacks_changes_nothing():
    first = a_host()
    second = fake.FakeRemote(fake.server(fake.release(LIVE, INITIAL), live=LIVE, applied=INITIAL, inventory=LAYOUT))
    all_, _ = sessions(first, second)
    with pytest.raises(DeployError) as refused:
        rolling.rollback_all(all_, PREVIOUS, False)
    assert f"10.0.0.12 has no good release {PREVIOUS}" in str(refused.value)
    assert switches(first) == 0
