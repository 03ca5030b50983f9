"""Migrations on a real server, on a fresh Debian 13 server of its own: a project whose dependencies ship
squashed migrations (a vendored app whose squashed migration replaces three others, as Wagtail's do) deploys,
rolls back and reverses only what it must; a release that crashes at start after a migration it cannot undo
says which migration failed and why; `fab rollback --migrate-back` then reverses it with the code of the
release that has its file (set aside in failed/), although the live code lacks it; and `fab status` fails
while the database is ahead of, or behind, the live code."""

from __future__ import annotations

import re

import pytest

from tests.integration.appsite import GOOD_MIGRATION, Site, deployed_id, make_site
from tests.integration.conftest import APP, provision_fresh

PINS_MODELS = '''from django.db import models


class Pin(models.Model):
    a = models.CharField(max_length=20, default="")
    b = models.CharField(max_length=20, default="")
    c = models.CharField(max_length=20, default="")
'''
PINS_D = PINS_MODELS + "    d = models.CharField(max_length=20, null=True)\n"


def pins_migration(name: str, parent: str | None, field: str) -> str:
    if parent is None:
        return ('from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n'
                '    initial = True\n    operations = [migrations.CreateModel("Pin", [("id", models.AutoField('
                'primary_key=True)), ("a", models.CharField(max_length=20, default=""))])]\n')
    return ('from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n'
            f'    dependencies = [("pins", "{parent}")]\n'
            f'    operations = [migrations.AddField("pin", "{field}", models.CharField(max_length=20, null=True))]\n')


PINS_SQUASHED = '''from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    replaces = [("pins", "0001_initial"), ("pins", "0002_b"), ("pins", "0003_c")]
    operations = [migrations.CreateModel("Pin", [
        ("id", models.AutoField(primary_key=True)), ("a", models.CharField(max_length=20, default="")),
        ("b", models.CharField(max_length=20, default="")), ("c", models.CharField(max_length=20, default=""))])]
'''

# Adds a column; its reverse refuses until the operator puts a file in the media directory (a reverse that
# fails the first time, as Wagtail's did when reversed one app at a time).
GUARDED_MIGRATION = '''from pathlib import Path

from django.conf import settings
from django.db import migrations, models


def forwards(apps, schema_editor):
    pass


def backwards(apps, schema_editor):
    if not (Path(settings.MEDIA_ROOT) / "allow-reverse").exists():
        raise RuntimeError("reverse refused on purpose")


class Migration(migrations.Migration):
    dependencies = [("counter", "0001_initial")]
    operations = [migrations.AddField("hit", "agent", models.CharField(max_length=200, null=True)),
                  migrations.RunPython(forwards, backwards)]
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    provisioned = provision_fresh("trixie", tmp_path_factory)
    yield provisioned
    provisioned.host.stop()


@pytest.fixture(scope="module")
def site(server, tmp_path_factory) -> Site:
    return make_site(server, tmp_path_factory, "migrations")


@pytest.fixture(scope="module")
def history() -> dict:
    return {}


def status_lines(site: Site):
    """`fab status`: its run, {check: detail} and {check: level}."""
    out = site.fab("status", check=False)
    found = re.findall(r"^  (ok|WARN|FAIL) +([^:]+): (.*)$", out.stdout, re.M)
    return out, {name: detail for _, name, detail in found}, {name: level for level, name, _ in found}


def column(site: Site, table: str, name: str) -> bool:
    return site.sql(f"select count(*) from information_schema.columns where table_name = '{table}' "
                    f"and column_name = '{name}'") == "1"


def test_a_project_with_squashed_migrations_deploys_and_rolls_back_plainly(site, history):
    settings = (site.repo.path / "mysite/settings.py").read_text()
    (site.repo.path / "pins" / "migrations").mkdir(parents=True)
    site.repo.write("pins/__init__.py", "")
    site.repo.write("pins/migrations/__init__.py", "")
    history["squashed"] = site.repo.commit("a vendored app with a squashed migration", **{
        "mysite__settings.py": settings.replace('    "counter",\n]', '    "counter",\n    "pins",\n]'),
        "pins__models.py": PINS_MODELS,
        "pins__migrations__0001_initial.py": pins_migration("0001_initial", None, "a"),
        "pins__migrations__0002_b.py": pins_migration("0002_b", "0001_initial", "b"),
        "pins__migrations__0003_c.py": pins_migration("0003_c", "0002_b", "c"),
        "pins__migrations__0001_squashed_0003_c.py": PINS_SQUASHED,
    })
    history["v1"] = v1 = deployed_id(site.deploy())
    # Django recorded the squashed migration and the three it replaces.
    assert site.sql("select count(*) from django_migrations where app = 'pins'") == "4"
    site.repo.set_version("2")
    out = site.deploy()
    history["v2"] = deployed_id(out)
    assert "ahead" not in out.stdout + out.stderr and "nothing to apply" in out.stdout
    listing = site.fab("releases")
    assert "ahead" not in listing.stdout + listing.stderr
    backups = set(site.ls("backups"))
    out = site.rollback()
    assert f"rolled back to {v1}" in out.stdout and "migrations" not in out.stdout
    assert set(site.ls("backups")) == backups, "a rollback with nothing to reverse takes no backup"
    _, lines, levels = status_lines(site)
    assert levels["schema"] == "ok", lines


def test_migrate_back_reverses_only_what_the_target_does_not_know(site, history):
    site.repo.set_version("3")
    site.repo.commit("pins.0004_d", **{"pins__models.py": PINS_D,
                                       "pins__migrations__0004_d.py": pins_migration("0004_d", "0003_c", "d")})
    out = site.deploy()
    assert "1 applied (pins.0004_d)" in out.stdout and "ahead" not in out.stdout
    refused = site.rollback(check=False)
    assert refused.returncode != 0 and "1 migration(s) that release" in refused.stderr, refused.stderr
    assert "pins.0004_d" in refused.stderr and "0001_initial" not in refused.stderr
    out = site.rollback("--to", history["v1"], "--migrate-back")
    assert "1 reversed (pins.0004_d), read back from the database, after a backup" in out.stdout
    assert site.sql("select count(*) from django_migrations where app = 'pins'") == "4"
    assert not column(site, "pins_pin", "d") and column(site, "pins_pin", "c")


def test_a_release_that_crashes_after_a_migration_it_cannot_undo_says_which_and_why(site, history):
    site.repo.reset(history["squashed"])
    site.repo.commit("a guarded migration, and a crash at start", **{
        "counter__migrations__0002_guarded.py": GUARDED_MIGRATION,
        "mysite__wsgi.py": "raise ImportError('crash on purpose')\n"})
    out = site.deploy(check=False)
    assert out.returncode != 0 and "crash on purpose" in out.stderr
    assert "could not all be reversed" in out.stderr, out.stderr
    assert "still applied (read back from the database): counter.0002_guarded" in out.stderr
    assert "Reversing counter.0002_guarded failed: RuntimeError: reverse refused on purpose" in out.stderr
    assert f"fab rollback --to {history['v1']} --migrate-back" in out.stderr
    history["failed"] = re.search(r"release (\S+) did not go live", out.stderr).group(1)
    assert history["failed"] in site.ls("failed")
    # fab status fails: the database is ahead of the live code.
    status, lines, levels = status_lines(site)
    assert status.returncode == 2 and levels["schema"] == "FAIL", status.stdout
    assert (f"the database has 1 migration(s) the live release {history['v1']} does not know "
            "(counter.0002_guarded)") in lines["schema"]


def test_migrate_back_uses_the_code_that_has_the_file_when_the_live_code_lacks_it(site, history):
    site.root(f"touch /srv/{APP}/shared/media/allow-reverse")
    out = site.rollback("--to", history["v1"], "--migrate-back")
    assert f"the live release {history['v1']} does not have the files of these migrations" in out.stdout
    assert f"reversing with release {history['failed']}'s code (/srv/{APP}/failed/{history['failed']})" in out.stdout
    assert "1 reversed (counter.0002_guarded), read back from the database" in out.stdout
    assert site.sql("select count(*) from django_migrations where app = 'counter'") == "1"
    assert not column(site, "counter_hit", "agent")
    _, lines, levels = status_lines(site)
    assert levels["schema"] == "ok", lines


def test_status_fails_when_the_database_lacks_a_migration_of_the_live_code(site, history):
    site.repo.reset(history["squashed"])
    site.repo.commit("counter.0002_hit_agent", **{"counter__migrations__0002_hit_agent.py": GOOD_MIGRATION})
    live = deployed_id(site.deploy())
    # As a restore of a dump from before the migration leaves it: the column and its row gone.
    site.sql("alter table counter_hit drop column agent; "
             "delete from django_migrations where app = 'counter' and name = '0002_hit_agent'")
    status, lines, levels = status_lines(site)
    assert status.returncode == 2 and levels["schema"] == "FAIL", status.stdout
    assert f"the database lacks 1 migration(s) the live release {live} has (counter.0002_hit_agent)" in lines["schema"]
    assert "`fab manage -- migrate`" in lines["schema"]
    site.fab("manage", "--", "migrate")
    _, lines, levels = status_lines(site)
    assert levels["schema"] == "ok", lines
