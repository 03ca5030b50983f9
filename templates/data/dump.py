"""Dump a Django project's database to a fixture, on the operator's machine, with the project's own Django and
its local settings (the ones `runserver` uses). Run by `fab import-data` as

    python dump.py PROJECT_DIR OUTPUT_FILE [DATABASE_FILE]

It runs the project's manage.py (so whatever settings module it picks is the one used), but instead of a
command it dumps the data: every model's rows, through the base manager (a custom default manager that hides
rows must not hide them from the copy), with natural keys for the models Django fills itself on the server.
It prints one JSON line: {"rows": {model: count}, "database": NAME, "media_root": PATH}, or {"error": TEXT}.
"""

import json
import os
import runpy
import sys
from collections import Counter

# Rows the server makes itself or that mean nothing there. contenttypes and auth.permission are created by
# migrate on the server, with their own ids (the rows that point at them are dumped with natural keys);
# admin.logentry is the local admin's history, pointing at local users and content types; sessions are local
# logins, signed with the laptop's secret key.
EXCLUDED = {"contenttypes": "django.contrib.contenttypes", "auth.permission": "django.contrib.auth",
            "admin.logentry": "django.contrib.admin", "sessions": "django.contrib.sessions"}


def fail(text):
    print(json.dumps({"error": text}))
    sys.exit(1)


def dump(argv=None):
    import django
    from django.conf import settings

    database = settings.DATABASES["default"]
    if len(sys.argv) > 3 and sys.argv[3]:
        database["NAME"] = sys.argv[3]
    name = str(database.get("NAME", ""))
    if "sqlite3" in database.get("ENGINE", "") and not os.path.isfile(name):
        fail(f"there is no SQLite database at {name}: give its path with --database PATH")
    django.setup()
    from django.apps import apps
    from django.core.management import call_command

    exclude = [label for label, app in EXCLUDED.items() if apps.is_installed(app)]
    with open(sys.argv[2], "w") as out:
        call_command("dumpdata", exclude=exclude, use_natural_foreign_keys=True, use_natural_primary_keys=True,
                     use_base_manager=True, verbosity=0, stdout=out)
    with open(sys.argv[2]) as dumped:
        in_dump = Counter(obj["model"] for obj in json.load(dumped))
    rows = {label: apps.get_model(label)._base_manager.count() for label in in_dump}
    short = {label: (in_dump[label], rows[label]) for label in rows if in_dump[label] != rows[label]}
    if short:
        fail("dumpdata did not export every row: " + ", ".join(f"{label} {n} of {m}" for label, (n, m)
                                                                  in sorted(short.items())))
    print(json.dumps({"rows": dict(sorted(rows.items())), "database": name,
                      "media_root": str(getattr(settings, "MEDIA_ROOT", "") or "")}))


project = sys.argv[1]
os.chdir(project)
sys.path.insert(0, project)
import django.core.management  # noqa: E402  (manage.py imports execute_from_command_line from here)

django.core.management.execute_from_command_line = dump
sys.argv[0] = os.path.join(project, "manage.py")
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except Exception as error:  # the project's settings or models failed to load: say what, in one line
    fail(f"{error.__class__.__name__}: {error}")
