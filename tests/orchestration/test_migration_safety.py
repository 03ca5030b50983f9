"""The deploy's migration safety check against the fake server: pending migrations the live release would trip
on are refused before anything is uploaded (saying what still serves), accepted with a WARNING under
--allow-unsafe-migrations, shown alike by the dry run; additive ones pass with one line; a first deploy (no old
code running) is not checked."""

from __future__ import annotations

import io

import pytest

from tasks.cli import deploy
from tasks.session.run import DeployError
from tests.orchestration import fake
from tests.orchestration.test_deploy import a_build

LIVE = "20261201T000000Z-aaaaaaa"
INITIAL = '''from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    operations = [migrations.CreateModel("Hit", [("id", models.AutoField(primary_key=True)),
                                                 ("path", models.CharField(max_length=255))])]
'''
DROP = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("counter", "0001_initial")]
    operations = [migrations.RemoveField("hit", "path")]
'''
ADD = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("counter", "0001_initial")]
    operations = [migrations.AddField("hit", "agent", models.CharField(max_length=200, null=True))]
'''


def a_project(second: str) -> dict[str, str]:
    return {"counter/migrations/__init__.py": "", "counter/migrations/0001_initial.py": INITIAL,
            "counter/migrations/0002_next.py": second}


def a_server(live: bool = True) -> fake.FakeRemote:
    releases = [fake.release(LIVE, ["counter.0001_initial"])] if live else []
    remote = fake.FakeRemote(fake.server(*releases, applied=["counter.0001_initial"]))
    a_build(remote, ["counter.0001_initial", "counter.0002_next"])
    remote.on("backup", report={"backup": "/srv/mysite/backups/x.dump"})
    remote.on("switch", report={"health": 200})
    return remote


def test_a_dropped_column_the_live_release_reads_is_refused_before_anything_is_uploaded():
    remote = a_server()
    with pytest.raises(DeployError) as refused:
        deploy.deploy_to(fake.session(remote), fake.a_source(files=a_project(DROP)))
    message = str(refused.value)
    assert (f"the live release {LIVE} would trip on the pending migrations while it still serves, from the "
            "migrate until the switch:\n" in message)
    assert ("- counter.0002_next: RemoveField hit.path: drops a column the live release reads in every query of "
            "hit") in message
    assert "SeparateDatabaseAndState(state_operations=[migrations.RemoveField(...)])" in message
    assert f"Nothing was changed; {LIVE} is still serving" in message and "--allow-unsafe-migrations" in message
    assert remote.uploads == {} and remote.scripts == []


def test_the_flag_accepts_the_window_the_deploy_goes_on_and_warns_naming_the_operation():
    remote, out = a_server(), io.StringIO()
    deploy.deploy_to(fake.session(remote, out=out), fake.a_source(files=a_project(DROP)),
                     allow_unsafe_migrations=True)
    text = out.getvalue()
    assert f"WARNING   migration safety: accepted with --allow-unsafe-migrations: the live release {LIVE}" in text
    assert "counter.0002_next: RemoveField hit.path: drops a column" in text
    assert "The safe way" not in text
    assert remote.ran("migrate") and remote.ran("switch")


def test_an_additive_migration_passes_with_one_line():
    remote, out = a_server(), io.StringIO()
    deploy.deploy_to(fake.session(remote, out=out), fake.a_source(files=a_project(ADD)))
    lines = [line for line in out.getvalue().splitlines() if "migration safety" in line]
    assert lines == [f"  ok        migration safety: compatible with the live release {LIVE}: counter.0002_next"]
    assert remote.ran("migrate")


def test_code_it_does_not_judge_and_files_it_cannot_read_are_named_and_not_refused():
    project = a_project(ADD.replace("null=True))]", "null=True)), migrations.RunPython(f)]"))
    project["counter/migrations/0003_broken.py"] = "class Migration(:\n"
    remote, out = a_server(), io.StringIO()
    deploy.deploy_to(fake.session(remote, out=out), fake.a_source(files=project))
    line = next(line for line in out.getvalue().splitlines() if "migration safety" in line)
    assert line.startswith(f"  unknown   migration safety: compatible with the live release {LIVE}: "
                           "counter.0002_next; 1 file(s) it could not read, not checked: ")
    assert "counter.0003_broken (could not read: syntax error on line 1" in line
    assert "counter.0002_next: RunPython (line 6; not checked: gangway does not judge code)" in line


def test_a_first_deploy_has_no_old_code_running_and_is_not_refused():
    remote, out = a_server(live=False), io.StringIO()
    deploy.deploy_to(fake.session(remote, out=out), fake.a_source(files=a_project(DROP)))
    assert "ok        migration safety: no release is live: no old code runs on the new schema" in out.getvalue()
    assert remote.ran("migrate")


@pytest.mark.parametrize("second, flag, expected", [
    (DROP, False, "REFUSED   migration safety: the deploy would refuse: the live release"),
    (DROP, True, "to change migration safety: accepted with --allow-unsafe-migrations"),
    (ADD, False, f"ok        migration safety: compatible with the live release {LIVE}: counter.0002_next"),
])
def test_the_dry_run_shows_the_same_verdict_and_changes_nothing(second, flag, expected):
    remote, out = a_server(), io.StringIO()
    remote.on("environment", report={"env_before": "", "env_after": ""})
    deploy.preview(fake.session(remote, out=out), fake.a_source(files=a_project(second)), flag)
    text = out.getvalue()
    assert expected in text, text
    assert ("RemoveField hit.path" in text) == (second == DROP)
    assert ("SeparateDatabaseAndState" in text) == (second == DROP and not flag)
    assert remote.uploads == {} and [fake.steps_of(s) for s in remote.scripts] == [["environment"]]
