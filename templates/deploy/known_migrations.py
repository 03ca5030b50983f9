# The migrations a release's code knows, as Django names them in its django_migrations table: put in front of
# release_check.py (the release check's "migrations" gate), and run on its own by the unit tests.
#
# Django's migration graph leaves out the migrations a squashed migration replaces (when none or all of them
# are applied), yet applying the squashed one records every replaced name in django_migrations too; so a
# release knows the replaced names as well, listed before the squashed one, and which squash replaces which
# (`replaces`) goes along, so that gangway can compare a database with a release as `showmigrations` does.


def known_migrations(loader):
    """{"migrations": ["app.name", ...] in plan order, "replaces": {"app.squashed": ["app.replaced", ...]}}."""
    plan, replaces = [], {}
    seen = set()

    def add(name):
        if name not in seen:
            seen.add(name)
            plan.append(name)

    for leaf in sorted(loader.graph.leaf_nodes()):
        for key in loader.graph.forwards_plan(leaf):
            migration = loader.graph.nodes[key]
            replaced = [f"{app}.{name}" for app, name in (migration.replaces or ())]
            for name in replaced:
                add(name)
            if replaced:
                replaces[f"{key[0]}.{key[1]}"] = replaced
            add(f"{key[0]}.{key[1]}")
    return {"migrations": plan, "replaces": replaces}
