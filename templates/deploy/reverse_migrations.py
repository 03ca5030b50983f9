# Reverse migrations the way Django itself does, run inside the release whose code has their files, by
# `manage.py shell --command` as the app user (tasks/commands/programs.py). Its input: {"remove": [...]}, the migrations
# to reverse ("app.name" as django_migrations holds them).
#
# Django's own executor plans the way back: one plan for all the apps at once, in reverse dependency order,
# with the project state rendered as `migrate` renders it (reversing one app at a time, as a `migrate APP
# TARGET` per app does, breaks on projects such as Wagtail). A name that a squashed migration replaces counts
# as that squashed migration. Nothing is changed unless the plan reverses exactly the migrations asked: ones
# this code does not have, or a plan that would also reverse others, are reported and the program exits 3.
# Prints report lines: {"reverse_plan": [...]}, one {"unapplied": name} per migration reversed, and on a
# failure {"reverse_failed": name, "why": "Error: ..."} (exit 1).
import json
import sys
import traceback

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor


def say(**facts):
    print("@gangway " + json.dumps(facts), flush=True)


def dotted(key):
    return f"{key[0]}.{key[1]}"


current = {}


def progress(action, migration=None, fake=False):
    if action == "unapply_start":
        current["name"] = dotted((migration.app_label, migration.name))
    elif action == "unapply_success":
        say(unapplied=dotted((migration.app_label, migration.name)))
        current.pop("name", None)


def reverse(remove):
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS], progress)
    graph, applied = executor.loader.graph, executor.loader.applied_migrations
    wanted = {tuple(name.split(".", 1)) for name in remove}

    def names(key):  # the names a node stands for: its own, and those it replaces
        return {key, *(tuple(r) for r in (graph.nodes[key].replaces or ()))}

    known = set().union(*(names(key) for key in graph.nodes)) if graph.nodes else set()
    unknown = sorted(dotted(key) for key in wanted - known)
    if unknown:
        say(reverse_unknown=unknown)
        sys.exit(3)
    nodes = {key for key in graph.nodes if key in applied and names(key) & wanted}
    targets = set()
    for key in nodes:  # the first migration to reverse in its app goes back to its parent in that app (or zero)
        parents = [p.key for p in graph.node_map[key].parents if p.key[0] == key[0]]
        if not any(p in nodes for p in parents):
            targets.update(parents or [(key[0], None)])
    targets = sorted(targets, key=lambda t: (t[0], t[1] or ""))
    # A target that is itself to be reversed (two branches of one app) is covered by its own parent.
    targets = [t for t in targets if t not in nodes]
    plan = executor.migration_plan(targets)
    planned = [(migration.app_label, migration.name) for migration, backwards in plan]
    if any(not backwards for _, backwards in plan):
        say(reverse_extra=[dotted(k) for (m, b), k in zip(plan, planned) if not b], why="the plan applies migrations")
        sys.exit(3)
    if set(planned) != nodes:
        # Django would also reverse migrations that the release to run needs (or leave some asked for): refuse.
        say(reverse_extra=sorted(dotted(k) for k in set(planned) - nodes),
            reverse_left=sorted(dotted(k) for k in nodes - set(planned)))
        sys.exit(3)
    say(reverse_plan=[dotted(k) for k in planned])
    if not plan:
        return
    try:
        executor.migrate(targets, plan=plan)
    except Exception as error:  # which migration, and Django's own words for why
        traceback.print_exc()
        say(reverse_failed=current.get("name", "?"), why=f"{type(error).__name__}: {error}"[:1000])
        sys.exit(1)


reverse(json.load(sys.stdin)["remove"])
