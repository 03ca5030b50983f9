"""Whether the pending migrations leave the live release working: judged from the project's migration files.

Between the migrate and the switch, and while the previous release waits warm for a rollback, the live
release's code runs against the new schema. A migration that drops or renames a column or table that code
reads, adds a NOT NULL column with no default in the database, or changes a column's type or makes it NOT NULL,
breaks it for that time. This module reads the migration files the deploy ships, with `ast` only (no project
code runs, no Django is needed on this machine), replays each app's operations to know every field's last
definition, and says which operations of the migrations the database has not applied the live code would trip
on. The same verdict serves `fab deploy` (which refuses unless told to accept it) and its dry run.

Not judged: RunSQL and RunPython (code, not declarations), operations it does not know, and the migrations of
installed packages (they are not in the project's files).
"""

from __future__ import annotations

import ast
import io
import re
import tarfile
from dataclasses import dataclass, field

# A migration file larger than this is not read (no project writes one; a hostile one should not cost time).
MAX_FILE_BYTES = 1024 * 1024
_MIGRATION = re.compile(r"(?:^|/)([A-Za-z_][A-Za-z0-9_]*)/migrations/([0-9][A-Za-z0-9_]*)\.py$")


class _Unknown:
    """A value written as an expression, not a literal (`null=settings.X`): it could be anything."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()

# Django's operations' positional parameters, so that `AddField("hit", "agent", field)` and keywords read alike.
PARAMETERS = {
    "CreateModel": ("name", "fields", "options", "bases", "managers"),
    "DeleteModel": ("name",),
    "RenameModel": ("old_name", "new_name"),
    "AlterModelTable": ("name", "table"),
    "AlterModelOptions": ("name", "options"),
    "AlterOrderWithRespectTo": ("name", "order_with_respect_to"),
    "AddField": ("model_name", "name", "field", "preserve_default"),
    "AlterField": ("model_name", "name", "field", "preserve_default"),
    "RemoveField": ("model_name", "name"),
    "RenameField": ("model_name", "old_name", "new_name"),
    "SeparateDatabaseAndState": ("database_operations", "state_operations"),
}
# Operations that change no column or table the live code reads. Indexes and constraints leave the columns as
# they are; a new constraint could reject a write of the live code, which is a question of data, not schema.
HARMLESS = {
    "CreateModel", "AlterModelOptions", "AlterModelManagers", "AlterModelTableComment", "AlterUniqueTogether",
    "AlterIndexTogether", "AddIndex", "RemoveIndex", "RenameIndex", "AddConstraint", "RemoveConstraint",
    "AlterConstraint",
    # django.contrib.postgres.operations
    "CreateExtension", "BloomExtension", "BtreeGinExtension", "BtreeGistExtension", "CITextExtension",
    "CryptoExtension", "HStoreExtension", "TrigramExtension", "UnaccentExtension", "AddIndexConcurrently",
    "RemoveIndexConcurrently", "CreateCollation", "RemoveCollation", "AddConstraintNotValid", "ValidateConstraint",
}
CODE = {"RunSQL", "RunPython"}
# Fields that add no column to the model's table, or one the database fills itself.
NO_COLUMN_TO_FILL = {"ManyToManyField", "GeneratedField"}
# django-safemigrate's markers: `safe = Safe.before_deploy` (or `Safe.before_deploy()`), read without importing it.
MARKERS = {"before_deploy", "after_deploy", "always"}

# The safe way to do each kind of change, in deploys (expand, deploy, contract).
TWO_STEP = {
    "drop": "drop a field in two deploys: first ship code that no longer uses it, with a migration that removes "
            "it from Django's state only (`migrations.SeparateDatabaseAndState(state_operations=[migrations."
            "RemoveField(...)])`, after an AlterField to null=True if the column is NOT NULL, so the new code's "
            "inserts do not fail); then drop the column in a later deploy (`migrations.RunSQL(\"ALTER TABLE ... "
            "DROP COLUMN ...\")`), once no live code reads it",
    "drop-table": "delete a model in two deploys: first ship code that no longer uses it, with "
                  "`migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(...)])`; then drop "
                  "the table in a later deploy (`migrations.RunSQL(\"DROP TABLE ...\")`)",
    "rename": "keep the column's name: give the field `db_column=\"OLD_NAME\"`, so the rename changes only "
              "Django's state; or expand and contract: add the new field null=True and write both, backfill, "
              "deploy; move the reads to it, deploy; then drop the old field as above",
    "rename-table": "keep the table's name: set `db_table = \"OLD_TABLE\"` in the model's Meta, so the rename "
                    "changes only Django's state; or copy to a new model over several deploys",
    "not-null-add": "add the field with null=True (or with `db_default=`, Django 5.0+: a default the database "
                    "itself gives the live code's inserts; `default=` is not one, Django drops it once the rows are "
                    "filled), deploy, backfill the rows, then make it NOT NULL in a later deploy",
    "not-null": "make a column NOT NULL only once no live code writes NULL into it: deploy code that always sets "
                "it and backfill the rows first, then the AlterField in a later deploy",
    "type": "change a type over several deploys: add a field of the new type null=True and write both, backfill, "
            "deploy; move the reads to it, deploy; then drop the old field as above",
    "marked": "ship the code that no longer needs the old schema first, then this migration in a later deploy "
              "(or change the marker if it is in fact safe to run while the old code serves)",
}


@dataclass(frozen=True)
class Field:
    """A field as a migration declares it: its class's name and its keyword arguments' literal values
    (UNKNOWN where an argument is an expression). `cls` is None when the field is not a call it can read."""
    cls: str | None
    kwargs: dict

    def null(self):
        return self.kwargs.get("null", False)


@dataclass
class Model:
    fields: dict[str, Field]
    options: dict
    complete: bool = True   # False: its fields could not all be read, so any name may be one of them

    def has_table(self) -> bool:
        return self.options.get("proxy") is not True and self.options.get("managed") is not False

    def copy(self) -> "Model":
        return Model(dict(self.fields), dict(self.options), self.complete)


State = dict  # "app.model" (lower case) -> Model


@dataclass(frozen=True)
class Operation:
    kind: str            # the class's name: "AddField"
    args: dict           # parameter name -> ast node
    line: int


@dataclass
class Migration:
    name: str            # "app.0002_x"
    app: str
    dependencies: list[str]
    replaces: list[str]
    operations: list[Operation]
    marker: str | None = None


@dataclass(frozen=True)
class Finding:
    """One operation the live release would trip on."""
    migration: str
    operation: str       # "RemoveField hit.agent"
    kind: str            # a key of TWO_STEP
    why: str

    def text(self) -> str:
        return f"{self.migration}: {self.operation}: {self.why}"


@dataclass
class Verdict:
    pending: list[str] = field(default_factory=list)        # the pending migrations it read, in order
    findings: list[Finding] = field(default_factory=list)   # what the live release would trip on
    trusted: list[Finding] = field(default_factory=list)    # the same, in migrations marked safe by their author
    unchecked: list[str] = field(default_factory=list)      # "app.0003: RunPython (not checked: ...)"
    unreadable: list[str] = field(default_factory=list)     # "app.0004 (could not read: ...)"

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(f.kind for f in self.findings))


# --- reading the files ---------------------------------------------------------------------------------------

def migration_files(archive: bytes) -> dict[str, bytes | None]:
    """The migration files a project's archive holds, "label.name" (the label is the app's directory name,
    Django's default) -> content (None: too large to read), in file order."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            match = _MIGRATION.search(member.name)
            if match:
                name = f"{match.group(1)}.{match.group(2)}"
                found[name] = None if member.size > MAX_FILE_BYTES else tar.extractfile(member).read()
    return found


class Unreadable(Exception):
    """A migration file it cannot read; the message says why."""


def _literal(node: ast.AST | None):
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return UNKNOWN


def _call_name(node: ast.AST) -> str | None:
    """`migrations.AddField(...)` and `AddField(...)` -> "AddField"."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _operation(node: ast.AST) -> Operation:
    kind = _call_name(node) if isinstance(node, ast.Call) else None
    if kind is None:
        return Operation("?", {}, getattr(node, "lineno", 0))
    names = PARAMETERS.get(kind, ())
    args = dict(zip(names, node.args))
    args.update({k.arg: k.value for k in node.keywords if k.arg})
    return Operation(kind, args, node.lineno)


def _operations(node: ast.AST | None) -> list[Operation]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_operation(item) for item in node.elts]
    if node is None or _literal(node) in (None, [], ()):
        return []
    return [Operation("?", {}, getattr(node, "lineno", 0))]


def _pairs(node: ast.AST) -> list[str]:
    """("app", "name") pairs of a list literal as "app.name"; anything else (swappable_dependency(...)) skipped."""
    out = []
    for item in getattr(node, "elts", []):
        value = _literal(item)
        if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
            out.append(f"{value[0]}.{value[1]}")
    return out


def parse(name: str, data: bytes | None) -> Migration:
    """The migration in `data` (the file of migration `name`, "app.0002_x"); Unreadable if it cannot be read."""
    if data is None:
        raise Unreadable(f"larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        tree = ast.parse(data, filename=name)
    except SyntaxError as error:
        raise Unreadable(f"syntax error on line {error.lineno}: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise Unreadable(f"not Python it can parse ({type(error).__name__})") from None
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Migration"]
    if not classes:
        raise Unreadable("no class Migration in it")
    app = name.split(".", 1)[0]
    migration = Migration(name, app, [], [], [])
    operations = None
    for statement in classes[-1].body:
        if isinstance(statement, ast.Assign):
            targets = [t.id for t in statement.targets if isinstance(t, ast.Name)]
            value = statement.value
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            targets, value = [statement.target.id], statement.value
        else:
            continue
        for target in targets:
            if target == "operations":
                if not isinstance(value, (ast.List, ast.Tuple)):
                    raise Unreadable("its operations are not a list written out in the file")
                operations = _operations(value)
            elif target == "dependencies":
                migration.dependencies = _pairs(value)
            elif target == "replaces":
                migration.replaces = _pairs(value)
            elif target == "safe" and _call_name(value) in MARKERS:
                migration.marker = _call_name(value)
    migration.operations = operations or []
    return migration


# --- the models' state, replayed -------------------------------------------------------------------------

def _text(node: ast.AST | None) -> str | None:
    value = _literal(node)
    return value if isinstance(value, str) else None


def _field(node: ast.AST | None) -> Field:
    if not isinstance(node, ast.Call):
        return Field(None, {})
    return Field(_call_name(node), {k.arg: _literal(k.value) for k in node.keywords if k.arg})


def _options(node: ast.AST | None) -> dict:
    if not isinstance(node, ast.Dict):
        return {}
    return {key: _literal(value) for key, value in zip((_literal(k) for k in node.keys), node.values)
            if isinstance(key, str)}


def _model(app: str, op: Operation, key: str = "name") -> str | None:
    name = _text(op.args.get(key))
    return f"{app}.{name.lower()}" if name else None


def _apply(op: Operation, app: str, state: State) -> None:
    """Change `state` as Django's state would change with `op` (what it cannot read, it leaves alone)."""
    kind, args = op.kind, op.args
    if kind == "SeparateDatabaseAndState":
        for inner in _operations(args.get("state_operations")):
            _apply(inner, app, state)
        return
    if kind == "CreateModel":
        key, fields, complete = _model(app, op), {}, True
        node = args.get("fields")
        for item in getattr(node, "elts", None) or []:
            name = _literal(item.elts[0]) if isinstance(item, ast.Tuple) and len(item.elts) == 2 else None
            if isinstance(name, str):
                fields[name] = _field(item.elts[1])
            else:
                complete = False
        if key:
            state[key] = Model(fields, _options(args.get("options")),
                               complete and isinstance(node, (ast.List, ast.Tuple)))
        return
    model_key = _model(app, op, "model_name" if "model_name" in PARAMETERS.get(kind, ()) else "name")
    model = state.get(model_key) if model_key else None
    if kind == "DeleteModel" and model_key:
        state.pop(model_key, None)
    elif kind == "RenameModel":
        old, new = _model(app, op, "old_name"), _model(app, op, "new_name")
        if old and new and old in state:
            state[new] = state.pop(old)
    elif model is None:
        return
    elif kind == "AlterModelTable":
        model.options["db_table"] = _literal(args.get("table"))
    elif kind == "AlterModelOptions":
        model.options.update(_options(args.get("options")))
    elif kind == "AlterOrderWithRespectTo":
        model.options["order_with_respect_to"] = _literal(args.get("order_with_respect_to"))
    elif kind in ("AddField", "AlterField"):
        if name := _text(args.get("name")):
            model.fields[name] = _field(args.get("field"))
    elif kind == "RemoveField":
        model.fields.pop(_text(args.get("name")) or "", None)
    elif kind == "RenameField":
        old, new = _text(args.get("old_name")), _text(args.get("new_name"))
        if old and new and old in model.fields:
            model.fields[new] = model.fields.pop(old)


def _copy(state: State) -> State:
    return {key: model.copy() for key, model in state.items()}


# --- judging one operation ------------------------------------------------------------------------------

class _Unchecked(Exception):
    """An operation it cannot judge; the message says why."""


def _live_uses(live: State, now: State, model_key: str, name: str | None = None) -> bool:
    """Whether the live code (whose models are the state of the applied migrations) has this model (and field):
    a model or field that pending migrations created is not its; one known to neither state may be."""
    model = live.get(model_key)
    if model is None:
        return model_key not in now
    if not model.has_table():
        return False
    if name is None or name in model.fields or not model.complete:
        return True
    current = now.get(model_key)
    return current is None or name not in current.fields  # in neither state: it may be the live code's


def judge(op: Operation, app: str, now: State, live: State) -> list[tuple[str, str, str]]:
    """What the live release would trip on in `op` (a schema operation run against the state `now`; `live`
    is the live code's): [(kind, "AddField hit.agent", why)]. Raises _Unchecked when it cannot tell."""
    kind, args = op.kind, op.args
    if kind in HARMLESS:
        return []
    if kind in CODE:
        raise _Unchecked("not checked: gangway does not judge code")
    if kind not in PARAMETERS or kind == "SeparateDatabaseAndState":
        raise _Unchecked("not checked: not a Django schema operation gangway knows")
    model_param = "model_name" if "model_name" in PARAMETERS[kind] else "name"
    old_key = "old_name" if kind == "RenameModel" else model_param
    model_key = _model(app, op, old_key)
    if model_key is None:
        raise _Unchecked("could not read which model it changes")
    model_name = model_key.split(".", 1)[1]
    if kind in ("DeleteModel", "RenameModel", "AlterModelTable", "AlterOrderWithRespectTo"):
        if not _live_uses(live, now, model_key):
            return []
        current = now.get(model_key)
        options = current.options if current else {}
        what = f"{kind} {model_name}"
        if kind == "DeleteModel":
            return [("drop-table", what, f"drops the table of {model_name}, which the live release reads")]
        if kind == "RenameModel":
            if isinstance(options.get("db_table"), str):
                return []  # an explicit db_table: the table keeps its name
            return [("rename-table", f"{what} -> {_text(args.get('new_name')) or '?'}",
                     f"renames the table of {model_name}: the live release still queries the old name")]
        if kind == "AlterModelTable":
            table = _literal(args.get("table"))
            if table == (options.get("db_table") or f"{app}_{model_name}"):  # Django's default name, if none
                return []
            return [("rename-table", f"{what} -> {table if isinstance(table, str) else '?'}",
                     f"renames the table of {model_name}: the live release still queries the old name")]
        wanted = _literal(args.get("order_with_respect_to"))
        if wanted == options.get("order_with_respect_to"):
            return []
        if wanted:
            return [("not-null-add", what, f"adds the NOT NULL column _order to {model_name} with no database "
                     "default: the live release's inserts leave it out and fail")]
        return [("drop", what, f"drops the column _order of {model_name}, which the live release reads")]
    name_key = "old_name" if kind == "RenameField" else "name"
    name = _text(args.get(name_key))
    if name is None:
        raise _Unchecked("could not read which field it changes")
    what = f"{kind} {model_name}.{name}"
    if not _live_uses(live, now, model_key, None if kind == "AddField" else name):
        return []
    model = now.get(model_key)
    before = model.fields.get(name) if model else None
    if kind == "AddField":
        new = _field(args.get("field"))
        if new.cls is None:
            raise _Unchecked("could not read the field it adds")
        if new.cls in NO_COLUMN_TO_FILL or new.null() is True or "db_default" in new.kwargs:
            return []
        if new.null() is UNKNOWN:
            raise _Unchecked("could not read whether the field it adds may be NULL")
        default = (" (its `default=` is not one: Django fills the existing rows with it, then drops it from "
                   "the column)" if "default" in new.kwargs else "")
        return [("not-null-add", what, f"adds a NOT NULL column with no database default{default}: the live "
                 f"release's inserts into {model_name} leave it out and fail")]
    if kind == "RemoveField":
        table = " (its join table)" if before and before.cls == "ManyToManyField" else ""
        return [("drop", what, f"drops a column{table} the live release reads in every query of {model_name}")]
    if kind == "RenameField":
        if before and isinstance(before.kwargs.get("db_column"), str):
            return []  # an explicit db_column: the column keeps its name
        return [("rename", f"{what} -> {_text(args.get('new_name')) or '?'}",
                 "renames a column: the live release still asks for the old name")]
    # AlterField
    new = _field(args.get("field"))
    if before is None or before.cls is None:
        raise _Unchecked("not checked: its earlier definition is not in the project's migration files")
    if new.cls is None:
        raise _Unchecked("could not read the field's new definition")
    found = []
    if new.cls != before.cls:
        found.append(("type", what, f"changes the field from {before.cls} to {new.cls} (the column's type): the "
                      f"live release reads and writes it as {before.cls}"))
    if before.null() is True and new.null() is not True:
        if new.null() is UNKNOWN:
            raise _Unchecked("could not read whether the field stays NULL-able")
        found.append(("not-null", what, "makes the column NOT NULL: the live release may write NULL there"))
    if before.kwargs.get("db_column") != new.kwargs.get("db_column"):
        found.append(("rename", what, "changes the column's name (db_column): the live release still asks for "
                      "the old one"))
    old_length, new_length = before.kwargs.get("max_length"), new.kwargs.get("max_length")
    if isinstance(old_length, int) and isinstance(new_length, int) and new_length < old_length:
        found.append(("type", what, f"shortens the column from {old_length} to {new_length} characters: longer "
                      "values the live release writes fail"))
    return found


# --- the verdict ---------------------------------------------------------------------------------------------

def _order(migrations: dict[str, Migration]) -> list[Migration]:
    """Dependencies first, then file order (a cycle, which Django refuses anyway, falls back to file order)."""
    done: list[Migration] = []
    seen: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in visiting or name not in migrations:
            return
        visiting.add(name)
        for dependency in migrations[name].dependencies:
            visit(dependency)
        visiting.discard(name)
        seen.add(name)
        done.append(migrations[name])

    for name in migrations:
        visit(name)
    return done


def _used(migrations: dict[str, Migration], applied: set[str]) -> dict[str, Migration]:
    """The migrations Django's loader plans with: a squashed one stands for those it replaces when none or all
    of them are applied; otherwise the replaced ones are used and the squashed one is not."""
    used = dict(migrations)
    for name, migration in migrations.items():
        if not migration.replaces:
            continue
        done = [r in applied for r in migration.replaces]
        if all(done) or not any(done):
            for replaced in migration.replaces:
                used.pop(replaced, None)
        else:
            used.pop(name, None)
    return used


def check(files: dict[str, bytes | None], applied: list[str]) -> Verdict:
    """Judge the pending migrations of `files` (migration_files()) against a database that has `applied`."""
    verdict = Verdict()
    done = set(applied)
    read: dict[str, Migration] = {}
    for name, data in files.items():
        try:
            read[name] = parse(name, data)
        except Unreadable as error:
            if name not in done:
                verdict.unreadable.append(f"{name} (could not read: {error})")
    ordered = _order(_used(read, done))

    def is_applied(migration: Migration) -> bool:
        return migration.name in done or bool(migration.replaces) and all(r in done for r in migration.replaces)

    state: State = {}
    for migration in ordered:
        if is_applied(migration):
            for op in migration.operations:
                _apply(op, migration.app, state)
    live = _copy(state)
    for migration in ordered:
        if is_applied(migration):
            continue
        verdict.pending.append(migration.name)
        found = _judge_migration(migration, state, live, verdict)
        if migration.marker == "after_deploy":
            found.insert(0, Finding(migration.name, "marked Safe.after_deploy", "marked",
                                    "its author says it runs only once the old code is gone, and a deploy "
                                    "migrates before it switches"))
        (verdict.trusted if migration.marker in ("before_deploy", "always") else verdict.findings).extend(found)
    return verdict


def _judge_migration(migration: Migration, state: State, live: State, verdict: Verdict) -> list[Finding]:
    """Judge each schema operation of `migration` and replay it on `state`: only a SeparateDatabaseAndState's
    database_operations touch the schema (judged on a scratch copy), only its state_operations the state."""
    found = []

    def judge_all(ops: list[Operation], now: State) -> None:
        for op in ops:
            if op.kind == "SeparateDatabaseAndState":
                scratch = _copy(now)
                judge_all(_operations(op.args.get("database_operations")), scratch)
                for inner in _operations(op.args.get("state_operations")):
                    _apply(inner, migration.app, now)
                continue
            try:
                for kind, what, why in judge(op, migration.app, now, live):
                    found.append(Finding(migration.name, what, kind, why))
            except _Unchecked as why:
                verdict.unchecked.append(f"{migration.name}: {op.kind} (line {op.line}; {why})")
            _apply(op, migration.app, now)

    judge_all(migration.operations, state)
    return found


# --- what to say ---------------------------------------------------------------------------------------------

def flagged(verdict: Verdict) -> list[str]:
    """Each flagged operation (app.migration: operation model.field: why), then the safe way for each kind."""
    lines = [f"- {finding.text()}" for finding in verdict.findings]
    lines.append("The safe way, over several deploys (expand, deploy, contract):")
    for kind in verdict.kinds():
        ops = list(dict.fromkeys(f.operation for f in verdict.findings if f.kind == kind))
        lines.append(f"- {', '.join(ops)}: {TWO_STEP[kind]}")
    return lines


def caveats(verdict: Verdict) -> str:
    """What it did not judge, for the end of a line: "" when it judged everything."""
    parts = []
    if verdict.unreadable:
        parts.append(f"{len(verdict.unreadable)} file(s) it could not read, not checked: "
                     f"{'; '.join(verdict.unreadable)}")
    if verdict.unchecked:
        parts.append(f"{len(verdict.unchecked)} operation(s) not checked: {'; '.join(verdict.unchecked)}")
    if verdict.trusted:
        parts.append("marked safe (Safe.before_deploy or Safe.always) by their author, so not flagged: "
                     + "; ".join(f.text() for f in verdict.trusted))
    return "; ".join(parts)
