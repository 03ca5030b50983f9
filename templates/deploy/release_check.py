# Run inside a new release by `manage.py shell --command` (so the project's own manage.py picks the settings),
# before the release gets any traffic: the readiness check, Django's deploy checks, collectstatic, the
# migrations the code knows, and the project's bytecode (compiled once here: the app user may not write into
# its release). tasks/project/django.py `check_script` puts readiness_facts.py (`readiness_facts`) and the module
# that words the findings (`readiness`) in front of this file.
# Prints a report line naming each part (gate) before it runs, so that a failure is told by the part that was
# running (tasks/project/diagnose.py), and one report line last; exits non-zero with the reasons when the release must
# not go live. Input (JSON): {"sealed": true} for a release already built that starts anew with other variables
# (`fab config`): only the gates the environment decides run; its static files, migrations and bytecode are built.
import compileall
import json
import re
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db.migrations.loader import MigrationLoader

report = {"warnings": []}
sealed = json.load(sys.stdin).get("sealed", False)


def gate(name):
    print("@gangway " + json.dumps({"gate": name}), flush=True)  # a report line: see tasks/commands/shell.py


gate("readiness")
# Settings that would break the site or leave it unsafe stop the release here, before collectstatic and
# migrations: each problem on its own line, with its reason and fix. The others are listed with the report.
findings = readiness.server_findings(readiness_facts)
blocking = [finding.text for finding in findings if finding.blocking]
if blocking:
    sys.exit(readiness.NOT_READY + ":\n" + "\n".join(f"- {text}" for text in blocking))
report["readiness"] = [finding.text for finding in findings if not finding.blocking]
gate("checks")
checks = StringIO()
try:
    call_command("check", deploy=True, stdout=checks, stderr=checks)
except SystemCheckError as error:
    sys.exit(f"`manage.py check --deploy` found problems:\n{error}")
report["warnings"] = [line for line in checks.getvalue().splitlines() if ": (" in line]
if sealed:
    print("@gangway " + json.dumps(report))
    sys.exit(0)

gate("collectstatic")
release = Path.cwd().resolve()
call_command("collectstatic", interactive=False, verbosity=0)
static_root = Path(settings.STATIC_ROOT).resolve()  # set and inside the release: the readiness check says so
served = release / "static"
if static_root != served and not served.exists():  # nginx serves the release's static/: link it there
    served.symlink_to(static_root.relative_to(release))

# One collected file and the URL it should have: the deploy fetches it through nginx before traffic moves, so
# "deployed" means the pages' CSS and JS answer too (a STATIC_URL other than the one nginx serves was already
# stopped by the readiness check, before the migrations; this proves the files themselves answer).
static_url = str(settings.STATIC_URL or "")
sample = next((path for path in sorted(static_root.rglob("*"))
               if path.is_file() and not path.name.startswith(".") and path.name != "staticfiles.json"), None)
if sample is not None and static_url.startswith("/"):
    relative = sample.relative_to(static_root).as_posix()
    report["static_sample"] = {"file": relative, "url": static_url.rstrip("/") + "/" + quote(relative)}

gate("migrations")
# Every name the code knows, those its squashed migrations replace included (known_migrations.py, put in
# front of this file by tasks/cli/deploy.py).
report.update(known_migrations(MigrationLoader(None, ignore_no_migrations=True)))
gate("bytecode")
compileall.compile_dir(str(release), quiet=2, rx=re.compile(r"/(\.venv|static|media|node_modules)/"))
print("@gangway " + json.dumps(report))
