"""Migrations the live release survives, on the shared Debian 13 server: an additive migration deploys with one
`ok` line; one that drops a column the live code reads is refused before anything is uploaded or migrated (the
database and the releases read back unchanged, the live release still answering); --allow-unsafe-migrations
deploys it with a WARNING naming the operation. The module puts the schema back at the end (the server is
shared)."""

from __future__ import annotations

import pytest

from tests.integration.appsite import Site, deployed_id, make_site

MODELS = '''from django.db import models


class Hit(models.Model):
    created = models.DateTimeField(auto_now_add=True)
    path = models.CharField(max_length=255)
'''
WITH_NOTE = MODELS + "    note = models.CharField(max_length=50, null=True)\n"
ADD_NOTE = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("counter", "0001_initial")]
    operations = [migrations.AddField("hit", "note", models.CharField(max_length=50, null=True))]
'''
DROP_NOTE = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("counter", "0002_safety_note")]
    operations = [migrations.RemoveField("hit", "note")]
'''


@pytest.fixture(scope="module")
def site(trixie, tmp_path_factory):
    site = make_site(trixie, tmp_path_factory, "migsafety")
    before = deployed_id(site.deploy())
    yield site
    # Leave the shared database as the example app's code expects it: without this module's migrations.
    site.rollback("--to", before, "--migrate-back", check=False)


def note_column(site: Site) -> bool:
    return site.sql("select count(*) from information_schema.columns where table_name = 'counter_hit' "
                    "and column_name = 'note'") == "1"


def applied(site: Site) -> list[str]:
    return site.sql("select name from django_migrations where app = 'counter' and name like '%safety%' "
                    "order by name").split()


def test_an_additive_migration_deploys_with_one_ok_line(site):
    site.repo.commit("a nullable note", **{"counter__models.py": WITH_NOTE,
                                           "counter__migrations__0002_safety_note.py": ADD_NOTE})
    out = site.deploy()
    assert "migration safety: compatible with the live release" in out.stdout, out.stdout
    assert "counter.0002_safety_note" in out.stdout and "WARNING" not in out.stdout
    assert note_column(site) and applied(site) == ["0002_safety_note"]


def test_dropping_a_column_the_live_code_reads_is_refused_before_anything_changes(site):
    live = site.answering().split()[1]
    releases, backups = site.ls("releases"), site.ls("backups")
    site.repo.commit("drop the note", **{"counter__models.py": MODELS,
                                         "counter__migrations__0003_safety_drop.py": DROP_NOTE})
    out = site.deploy(check=False)
    assert out.returncode != 0, out.stdout
    assert "counter.0003_safety_drop: RemoveField hit.note: drops a column the live release reads" in out.stderr
    assert "SeparateDatabaseAndState(state_operations=[migrations.RemoveField(...)])" in out.stderr
    assert f"Nothing was changed; {live} is still serving" in out.stderr, out.stderr
    # Read back: nothing uploaded, backed up or migrated, and the live release still answers.
    assert note_column(site) and applied(site) == ["0002_safety_note"]
    assert site.ls("releases") == releases and site.ls("backups") == backups
    assert site.answering().split()[1] == live
    dry = site.deploy("--dry-run")
    assert "REFUSED   migration safety: the deploy would refuse" in dry.stdout, dry.stdout


def test_the_flag_accepts_the_window_and_the_deploy_drops_the_column(site):
    out = site.deploy("--allow-unsafe-migrations")
    assert "WARNING   migration safety: accepted with --allow-unsafe-migrations" in out.stdout, out.stdout
    assert "counter.0003_safety_drop: RemoveField hit.note" in out.stdout
    assert site.answering().split()[1] == deployed_id(out)
    assert not note_column(site) and applied(site) == ["0002_safety_note", "0003_safety_drop"]
