"""tasks/project/migration_safety.py: which operations of the pending migrations the live release would trip
on, read from the migration files alone (no Django, no project code run), with the field history replayed."""

from __future__ import annotations

import io
import tarfile

import pytest

from tasks.project import migration_safety as ms

HEAD = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n"
INITIAL = HEAD + '''    initial = True
    operations = [
        migrations.CreateModel("Hit", [
            ("id", models.AutoField(primary_key=True)),
            ("path", models.CharField(max_length=255)),
            ("note", models.CharField(max_length=50, null=True)),
            ("tags", models.ManyToManyField("counter.Tag")),
        ]),
        migrations.CreateModel("Tag", [("id", models.AutoField(primary_key=True))]),
    ]
'''


def mig(*operations: str, deps=(("counter", "0001_initial"),), extra: str = "") -> str:
    return (HEAD + f"    dependencies = {list(deps)!r}\n" + extra
            + "    operations = [\n" + "".join(f"        {op},\n" for op in operations) + "    ]\n")


def verdict(*pending: str, applied=("counter.0001_initial",), files=None) -> ms.Verdict:
    """The verdict for counter.0001_initial (applied) followed by pending migrations 0002, 0003, ..."""
    found = {"counter.0001_initial": INITIAL.encode()}
    for index, text in enumerate(pending, start=2):
        found[f"counter.{index:04d}_m"] = text.encode()
    found.update({k: v.encode() for k, v in (files or {}).items()})
    return ms.check(found, list(applied))


def flagged(v: ms.Verdict) -> list[tuple[str, str]]:
    return [(f.kind, f.operation) for f in v.findings]


# --- each operation kind -------------------------------------------------------------------------------------

def test_adding_a_nullable_field_or_one_with_a_database_default_is_compatible():
    v = verdict(mig('migrations.AddField("hit", "agent", models.CharField(max_length=200, null=True))',
                    'migrations.AddField("hit", "score", models.IntegerField(db_default=0))',
                    'migrations.AddField("hit", "more", models.ManyToManyField("counter.Tag"))',
                    'migrations.AddField(model_name="hit", name="total", field=models.GeneratedField('
                    'expression=models.F("id"), output_field=models.IntegerField(), db_persist=True))'))
    assert v.pending == ["counter.0002_m"] and v.findings == [] and v.unchecked == [] and v.unreadable == []


def test_adding_a_not_null_field_with_only_a_django_default_is_flagged_with_why_and_the_safe_way():
    v = verdict(mig('migrations.AddField("hit", "agent", models.CharField(max_length=200, default=""))'))
    assert flagged(v) == [("not-null-add", "AddField hit.agent")]
    finding = v.findings[0]
    assert "NOT NULL column with no database default" in finding.why and "`default=` is not one" in finding.why
    assert "the live release's inserts into hit leave it out and fail" in finding.why
    assert finding.text().startswith("counter.0002_m: AddField hit.agent: adds a NOT NULL")
    lines = ms.flagged(v)
    assert lines[0] == f"- {finding.text()}"
    assert any(line.startswith("- AddField hit.agent: add the field with null=True (or with `db_default=`")
               for line in lines), lines


def test_a_not_null_foreign_key_is_flagged_and_one_whose_null_cannot_be_read_is_not_checked():
    v = verdict(mig('migrations.AddField("hit", "tag", models.ForeignKey("counter.Tag", on_delete=models.CASCADE))',
                    'migrations.AddField("hit", "other", models.IntegerField(null=settings.NULLABLE))'))
    assert flagged(v) == [("not-null-add", "AddField hit.tag")]
    assert v.unchecked == ["counter.0002_m: AddField (line 8; could not read whether the field it adds may be NULL)"]


def test_removing_a_field_or_a_model_the_live_code_has_is_flagged():
    v = verdict(mig('migrations.RemoveField("hit", "path")', 'migrations.RemoveField(model_name="hit", name="tags")',
                    'migrations.DeleteModel("Tag")'))
    assert flagged(v) == [("drop", "RemoveField hit.path"), ("drop", "RemoveField hit.tags"),
                          ("drop-table", "DeleteModel tag")]
    assert "(its join table)" in v.findings[1].why
    assert "SeparateDatabaseAndState(state_operations=[migrations.RemoveField(" in "\n".join(ms.flagged(v))


def test_renames_are_flagged_unless_the_column_or_table_name_is_pinned():
    v = verdict(mig('migrations.RenameField("hit", "path", "url")', 'migrations.RenameModel("Tag", "Label")',
                    'migrations.AlterModelTable("hit", "hits")'))
    assert flagged(v) == [("rename", "RenameField hit.path -> url"), ("rename-table", "RenameModel tag -> Label"),
                          ("rename-table", "AlterModelTable hit -> hits")]
    pinned = verdict(mig('migrations.AddField("hit", "ref", models.CharField(max_length=9, db_column="ref", '
                         'null=True))'),
                     mig('migrations.RenameField("hit", "ref", "reference")',
                         'migrations.AlterModelTable("tag", "counter_tag")',
                         'migrations.RenameModel("Tag", "Label")', deps=[("counter", "0002_m")]),
                     applied=("counter.0001_initial", "counter.0002_m"))
    assert pinned.findings == [], flagged(pinned)


def test_alter_field_is_flagged_when_it_changes_the_type_the_null_the_column_or_shortens_it():
    v = verdict(mig('migrations.AlterField("hit", "path", models.TextField())',
                    'migrations.AlterField("hit", "note", models.CharField(max_length=50))'),
                mig('migrations.AlterField("hit", "note", models.CharField(max_length=20, null=True, '
                    'db_column="n"))', deps=[("counter", "0002_m")]))
    assert [(f.kind, f.migration, f.operation) for f in v.findings] == [
        ("type", "counter.0002_m", "AlterField hit.path"), ("not-null", "counter.0002_m", "AlterField hit.note"),
        ("rename", "counter.0003_m", "AlterField hit.note"), ("type", "counter.0003_m", "AlterField hit.note")]
    assert "from CharField to TextField" in v.findings[0].why and "from 50 to 20 characters" in v.findings[3].why


def test_alter_field_that_only_widens_or_relaxes_is_compatible():
    v = verdict(mig('migrations.AlterField("hit", "path", models.CharField(max_length=500, null=True))',
                    'migrations.AlterField("hit", "note", models.CharField(max_length=50, null=True, '
                    'help_text="x"))'))
    assert v.findings == [] and v.unchecked == []


def test_alter_field_with_no_earlier_definition_in_the_files_is_not_checked():
    v = verdict(mig('migrations.AlterField("hit", "ghost", models.TextField())'))
    assert v.findings == [] and v.unchecked == [
        "counter.0002_m: AlterField (line 7; not checked: its earlier definition is not in the project's "
        "migration files)"]


def test_order_with_respect_to_adds_or_drops_the_order_column():
    v = verdict(mig('migrations.AlterOrderWithRespectTo("hit", "tag")'),
                mig('migrations.AlterOrderWithRespectTo("hit", None)', deps=[("counter", "0002_m")]))
    assert flagged(v) == [("not-null-add", "AlterOrderWithRespectTo hit"), ("drop", "AlterOrderWithRespectTo hit")]


def test_indexes_constraints_options_and_new_models_are_compatible():
    v = verdict(mig('migrations.AlterUniqueTogether("hit", {("path", "note")})',
                    'migrations.AddIndex("hit", models.Index(fields=["path"], name="p"))',
                    'migrations.AddConstraint("hit", models.CheckConstraint(condition=models.Q(id__gt=0), name="c"))',
                    'migrations.AlterModelOptions("hit", {"ordering": ["path"]})',
                    'migrations.CreateModel("Visit", [("id", models.AutoField(primary_key=True)), '
                    '("n", models.IntegerField())])'))
    assert v.findings == [] and v.unchecked == []


def test_code_and_unknown_operations_are_named_as_not_checked():
    v = verdict(mig('migrations.RunPython(forwards, migrations.RunPython.noop)', 'migrations.RunSQL("DROP TABLE x")',
                    'CustomOperation("hit")', 'ops[0]'))
    assert v.findings == []
    assert [line.split(" (")[0] for line in v.unchecked] == [
        "counter.0002_m: RunPython", "counter.0002_m: RunSQL", "counter.0002_m: CustomOperation", "counter.0002_m: ?"]
    assert "not checked: gangway does not judge code" in v.unchecked[0]
    assert "RunSQL" in ms.caveats(v) and "4 operation(s) not checked" in ms.caveats(v)


# --- what the live code has: applied versus pending ------------------------------------------------------------

def test_changes_to_a_model_or_field_that_pending_migrations_created_are_compatible():
    v = verdict(mig('migrations.CreateModel("Visit", [("id", models.AutoField(primary_key=True))])',
                    'migrations.AddField("visit", "n", models.IntegerField(default=0))',
                    'migrations.AddField("hit", "agent", models.CharField(max_length=9, null=True))'),
                mig('migrations.RemoveField("visit", "n")', 'migrations.AlterField("hit", "agent", '
                    'models.TextField())', 'migrations.DeleteModel("Visit")', deps=[("counter", "0002_m")]))
    assert v.findings == [] and v.pending == ["counter.0002_m", "counter.0003_m"]


def test_applied_migrations_are_not_judged_only_replayed():
    v = verdict(mig('migrations.RemoveField("hit", "path")'),
                mig('migrations.AddField("hit", "path", models.CharField(max_length=9, null=True))',
                    deps=[("counter", "0002_m")]),
                applied=("counter.0001_initial", "counter.0002_m"))
    assert v.pending == ["counter.0003_m"] and v.findings == []


def test_the_field_history_follows_dependencies_across_files_not_only_names():
    # 0002_late depends on 0003_early: the type change is judged against what 0003_early declared.
    files = {
        "counter.0002_late": mig('migrations.AlterField("hit", "extra", models.TextField(null=True))',
                                 deps=[("counter", "0003_early")]),
        "counter.0003_early": mig('migrations.AddField("hit", "extra", models.TextField(null=True))'),
    }
    v = verdict(files=files, applied=("counter.0001_initial", "counter.0003_early"))
    assert v.pending == ["counter.0002_late"] and v.findings == [] and v.unchecked == []
    files["counter.0003_early"] = mig('migrations.AddField("hit", "extra", models.IntegerField(null=True))')
    v = verdict(files=files, applied=("counter.0001_initial", "counter.0003_early"))
    assert flagged(v) == [("type", "AlterField hit.extra")]


def test_a_renamed_field_keeps_its_history():
    v = verdict(mig('migrations.RenameField("hit", "note", "remark")'),
                mig('migrations.AlterField("hit", "remark", models.CharField(max_length=50))',
                    deps=[("counter", "0002_m")]),
                applied=("counter.0001_initial", "counter.0002_m"))
    assert flagged(v) == [("not-null", "AlterField hit.remark")]


# --- SeparateDatabaseAndState -------------------------------------------------------------------------------

def test_a_state_only_removal_is_compatible_and_keeps_the_field_out_of_the_state():
    v = verdict(mig('migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField("hit", "note")])'),
                mig('migrations.AddField("hit", "note", models.IntegerField(null=True))', deps=[("counter", "0002_m")]))
    assert v.findings == [] and v.unchecked == []


def test_the_database_operations_of_separate_database_and_state_are_judged():
    v = verdict(mig('migrations.SeparateDatabaseAndState(database_operations=[migrations.RemoveField("hit", "path")],'
                    ' state_operations=[])',
                    'migrations.SeparateDatabaseAndState([migrations.RunSQL("ALTER TABLE counter_hit DROP x")], '
                    '[migrations.RemoveField("hit", "note")])'))
    assert flagged(v) == [("drop", "RemoveField hit.path")]
    assert v.unchecked[0].startswith("counter.0002_m: RunSQL")


def test_the_contract_step_drops_with_run_sql_after_a_state_only_removal_was_applied():
    v = verdict(mig('migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField("hit", "note")])'),
                mig('migrations.RunSQL("ALTER TABLE counter_hit DROP COLUMN note")', deps=[("counter", "0002_m")]),
                applied=("counter.0001_initial", "counter.0002_m"))
    assert v.findings == [] and len(v.unchecked) == 1


# --- squashed migrations --------------------------------------------------------------------------------------

SQUASH = mig('migrations.CreateModel("Pin", [("id", models.AutoField(primary_key=True)), '
             '("a", models.CharField(max_length=9)), ("b", models.CharField(max_length=9))])',
             deps=(), extra='    replaces = [("counter", "0001_initial"), ("counter", "0002_b")]\n')


def test_a_squashed_migration_whose_replaced_ones_are_applied_is_not_pending_and_gives_the_history():
    files = {"counter.0001_squashed_0002_b": SQUASH,
             "counter.0003_m": mig('migrations.RemoveField("pin", "b")', deps=[("counter", "0001_squashed_0002_b")])}
    v = ms.check({k: v.encode() for k, v in files.items()}, ["counter.0001_initial", "counter.0002_b"])
    assert v.pending == ["counter.0003_m"] and flagged(v) == [("drop", "RemoveField pin.b")]


def test_a_squashed_migration_partly_applied_gives_way_to_the_replaced_files():
    files = {
        "counter.0001_initial": INITIAL,
        "counter.0002_b": mig('migrations.RemoveField("hit", "path")'),
        "counter.0001_squashed_0002_b": SQUASH,
    }
    v = ms.check({k: v.encode() for k, v in files.items()}, ["counter.0001_initial"])
    assert v.pending == ["counter.0002_b"] and flagged(v) == [("drop", "RemoveField hit.path")]


def test_a_squashed_migration_none_applied_is_judged_instead_of_what_it_replaces():
    files = {"counter.0001_initial": INITIAL, "counter.0002_b": mig('migrations.RemoveField("hit", "path")'),
             "counter.0001_squashed_0002_b": SQUASH}
    v = ms.check({k: v.encode() for k, v in files.items()}, [])
    assert v.pending == ["counter.0001_squashed_0002_b"] and v.findings == []


# --- django-safemigrate's markers --------------------------------------------------------------------------------

def test_a_migration_marked_after_deploy_is_flagged_and_one_marked_before_deploy_is_trusted():
    after = verdict(mig('migrations.AddField("hit", "x", models.IntegerField(null=True))',
                        extra="    safe = Safe.after_deploy()\n"))
    assert flagged(after) == [("marked", "marked Safe.after_deploy")]
    before = verdict(mig('migrations.RemoveField("hit", "path")', extra="    safe = Safe.before_deploy\n"))
    assert before.findings == [] and [f.operation for f in before.trusted] == ["RemoveField hit.path"]
    assert "marked safe (Safe.before_deploy or Safe.always) by their author" in ms.caveats(before)


# --- hostile or unusual files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("content, why", [
    (b"class Migration(:\n", "could not read: syntax error on line 1"),
    (b"\x00\x01binary", "could not read: "),
    (b"x = 1\n", "could not read: no class Migration in it"),
    (HEAD.encode() + b"    operations = make_operations()\n", "could not read: its operations are not a list"),
    (b"(" * 200_000, "could not read: "),
    ("café = 'ü'\n".encode("latin-1"), "could not read: "),
])
def test_a_file_it_cannot_read_is_said_so_and_does_not_crash(content, why):
    v = ms.check({"counter.0001_initial": INITIAL.encode(), "counter.0002_bad": content}, ["counter.0001_initial"])
    assert v.findings == [] and len(v.unreadable) == 1, v
    assert v.unreadable[0].startswith("counter.0002_bad (") and why in v.unreadable[0]
    assert "could not read, not checked" in ms.caveats(v)


def test_an_applied_file_it_cannot_read_is_not_reported_and_a_huge_one_is_not_read():
    v = ms.check({"counter.0001_initial": b"class Migration(:", "counter.0002_big": None}, ["counter.0001_initial"])
    assert v.unreadable == [f"counter.0002_big (could not read: larger than {ms.MAX_FILE_BYTES // 1024} KiB)"]


def test_names_that_are_not_plain_are_kept_as_written_for_the_caller_to_escape():
    v = verdict(mig('migrations.RemoveField("hit", "path")', 'migrations.AddField("hit\\x1b[2J", "x", '
                    'models.IntegerField())'))
    assert v.findings[1].operation == "AddField hit\x1b[2j.x"


def test_migration_files_reads_the_archive_and_skips_what_is_too_large():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("manage.py", b""), ("counter/migrations/0001_initial.py", b"x"),
                           ("counter/migrations/__init__.py", b""), ("counter/models.py", b""),
                           ("shop/migrations/0002_big.py", b"#" * (ms.MAX_FILE_BYTES + 1))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert ms.migration_files(buffer.getvalue()) == {"counter.0001_initial": b"x", "shop.0002_big": None}
