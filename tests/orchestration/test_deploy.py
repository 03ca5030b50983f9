"""Deploy's failure branches, against the fake server: each asserts what is true, not what was meant."""

from __future__ import annotations

import io

import pytest

from tasks.cli import deploy
from tasks.session.run import DeployError
from tests.orchestration import fake

LIVE = "20261201T000000Z-aaaaaaa"


def a_build(remote: fake.FakeRemote, migrations: list[str]) -> fake.FakeRemote:
    """The build steps succeed and report the new release's migrations."""
    return remote.on("checks", report={"migrations": migrations, "venv": "reused", "warnings": []})


def test_a_backup_cut_before_migrate_says_nothing_was_migrated_and_offers_no_reverse():
    remote = fake.FakeRemote(fake.server(fake.release(LIVE, ["notes.0001_initial"]), applied=["notes.0001_initial"]))
    a_build(remote, ["notes.0001_initial", "notes.0002_tag"])
    remote.on("backup", ok=False, output="pg_dump: error: connection to server lost")
    remote.then_facts(applied=None)  # the server went down: after the failure, the database cannot be read
    out = io.StringIO()
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote, out=out), fake.a_source())
    message = str(failed.value)
    assert "the database backup failed, so nothing was migrated" in message
    assert "may still be applied" not in message and "reverse" not in message
    assert not remote.ran("migrate")
    assert f"{LIVE} is still serving" in message


def test_a_wsgi_module_changed_since_the_last_provision_is_refused_before_anything_is_built():
    import dataclasses
    from tasks.inventory import App, Host, Inventory
    remote = fake.FakeRemote(fake.server(fake.release(LIVE)))  # provisioned with mysite.wsgi
    changed = Inventory(dataclasses.replace(App("mysite"), wsgi_module="project.wsgi"), (Host("10.0.0.2"),))
    with pytest.raises(DeployError) as refused:
        deploy.deploy_to(fake.session(remote, changed), fake.a_source())
    message = str(refused.value)
    assert "the inventory's `app.wsgi_module` changed since the last `fab provision`" in message
    assert "Run `fab provision`, then deploy" in message and "Nothing was built or uploaded" in message
    assert f"{LIVE} is still serving" in message
    assert remote.scripts == [] and remote.uploads == {}


@pytest.mark.parametrize("version, found", [(None, "no uv"), ((0, 12, 3), "uv 0.12.3")])
def test_a_server_provisioned_before_uv_is_told_to_provision_before_anything_is_built(version, found):
    remote = fake.FakeRemote(fake.server(fake.release(LIVE), uv=version))
    with pytest.raises(DeployError) as refused:
        deploy.deploy_to(fake.session(remote), fake.a_source())
    message = str(refused.value)
    assert f"the server has {found} in /opt/gangway/uv and gangway builds Python environments with uv>=" in message
    assert "run `fab provision` once, then deploy again" in message and "Nothing was built or uploaded" in message
    assert f"{LIVE} is still serving" in message
    assert remote.scripts == [] and remote.uploads == {}


def test_settings_a_readiness_finding_blocks_stop_the_deploy_before_the_backup_and_migrations():
    """The release check's first gate words the settings' problems (here a MEDIA_URL nginx does not serve):
    the deploy stops there, with nothing backed up or migrated, and the live release still serving."""
    from tasks.commands import shell
    from tasks.project import readiness
    from tests.unit.test_readiness import facts
    finding = readiness.server_findings(facts(media_url="/uploads/"))[0]
    remote = fake.FakeRemote(fake.server(fake.release(LIVE, ["notes.0001_initial"]), applied=["notes.0001_initial"]))
    remote.on("checks", ok=False, report={"gate": "readiness"},
              output=f'{shell.REPORT} {{"gate": "readiness"}}\n{readiness.NOT_READY}:\n- {finding.text}\n')
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote), fake.a_source())
    message = str(failed.value)
    assert readiness.NOT_READY in message and "MEDIA_URL is '/uploads/', but nginx serves uploaded files at " \
                                              "/media/" in message
    assert f"{LIVE} is still serving" in message
    assert not remote.ran("backup") and not remote.ran("migrate") and not remote.ran("switch")


def test_a_database_gone_after_the_migrate_gives_the_command_that_reverses_it_once_it_answers():
    """PostgreSQL stops between the migrate and the switch: the message says whether the migrations are applied
    is unknown, and gives the exact command that reverses them with the failed release's code."""
    remote = fake.FakeRemote(fake.server(fake.release(LIVE, ["notes.0001_initial"]), applied=["notes.0001_initial"]))
    a_build(remote, ["notes.0001_initial", "notes.0002_tag"])
    remote.on("backup", report={"backup": "/srv/mysite/backups/x.dump"})
    remote.on("start", ok=False, output="release is not healthy: GET / answered 500")
    remote.then_facts(applied=None)
    with pytest.raises(DeployError) as failed:
        deploy.deploy_to(fake.session(remote), fake.a_source())
    message = str(failed.value)
    assert "whether the migrations it meant to apply (notes.0002_tag) are applied is unknown" in message
    assert f"`fab rollback --to {LIVE} --migrate-back` reverses them with this release's code" in message
    assert "{" not in message, message
