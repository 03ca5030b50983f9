"""Reading a failed gate's output: the gate named, the decisive line first, hints for the common causes.

The samples in tests/unit/gate_output/ are real outputs of the gates (pip, the release check run by
`manage.py shell --command`, migrate), captured from Python 3.13 and Django, with the paths made the server's.
"""

import shlex
import subprocess
from pathlib import Path

import pytest

from tasks.project import compat, diagnose, readiness
from tasks.commands import release as commands
from tasks.commands.shell import REPORT, parse_reports
from tests.unit.shellcheck import assert_shellcheck_clean

SAMPLES = Path(__file__).parent / "gate_output"
PYTHON = "3.13.5"
REQUIREMENTS = "Django>=5.2,<5.3\ngunicorn>=23,<24\npsycopg[binary]>=3.2,<4\n"


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


def as_the_step_prints_it(output: str, step: str) -> str:
    """What comes back from the server: the gate's output on stderr, the trap's line, report lines after."""
    return (output + f"\nfailed ({step}): if ! out=$(systemd-run --quiet --pipe --wait ...\n"
            + f'{REPORT} {{"free_kib": 9000000}}\n{REPORT} {{"code": 1, "failed": "{step}"}}\n')


def test_django_1_11_on_python_3_13_is_an_import_failure_with_the_versions_that_run_there():
    found = diagnose.diagnose("checks", as_the_step_prints_it(sample("import_django111_python313"), "checks"),
                              PYTHON, "Django==1.11.29\ngunicorn\n")
    assert found.gate == "import" and found.headline.startswith("the project could not be imported")
    # The cause, not manage.py's "Couldn't import Django. Are you sure it's installed?" that ends the chain.
    assert found.decisive == "ModuleNotFoundError: No module named 'django.utils.six.moves'"
    (hint,) = found.hints
    # The readiness check's words (tasks/project/readiness.py `versions`): one place says which Django runs where.
    assert "Django 1.11.29 does not run on the server's Python 3.13 (Debian 13)" in hint
    assert "5.1 (from 5.1.3), 5.2 LTS, 6.0, 6.1 run on it" in hint and "`url()`" in hint


@pytest.mark.parametrize("module, removed_in", [("distutils", "3.12"), ("imp", "3.12"), ("cgi", "3.13")])
def test_a_module_python_removed_names_the_python_that_removed_it(module, removed_in):
    output = ('Traceback (most recent call last):\n  File "/srv/mysite/releases/R/.venv/lib/python3.13/'
              f'site-packages/django/http/multipartparser.py", line 9, in <module>\n    import {module}\n'
              f"ModuleNotFoundError: No module named '{module}'\n")
    found = diagnose.diagnose("checks", output, PYTHON, "Django==2.2.28\n")
    assert found.gate == "import" and found.decisive == f"ModuleNotFoundError: No module named '{module}'"
    (hint,) = found.hints
    assert f"Python {removed_in} removed the module {module}" in hint
    assert "Django 2.2.28 does not run on the server's Python 3.13" in hint


def traceback(path: str, module: str) -> str:
    return (f'Traceback (most recent call last):\n  File "{path}", line 3, in <module>\n    import {module}\n'
            f"ModuleNotFoundError: No module named '{module}'\n")


def test_without_a_pin_the_hint_still_names_the_servers_python_and_what_runs_there():
    output = traceback("/srv/mysite/releases/R/.venv/lib/python3.12/site-packages/django/utils/version.py",
                       "distutils")
    (hint,) = diagnose.diagnose("checks", output, "3.12.3", "Django\n").hints
    assert "the Django in your requirements does not run on the server's Python 3.12" in hint
    assert "4.2 LTS (from 4.2.8), 5.0, 5.1, 5.2 LTS" in hint


def test_a_removed_module_imported_by_another_package_or_the_project_blames_that_not_django():
    site = "/srv/mysite/releases/R/.venv/lib/python3.13/site-packages"
    (hint,) = diagnose.diagnose("checks", traceback(f"{site}/markdown2/util.py", "imp"), PYTHON, REQUIREMENTS).hints
    assert hint == ("Python 3.12 removed the module imp, which markdown2 imports (see the traceback): upgrade "
                    "markdown2 in your requirements to a version made for Python 3.13 (Debian 13).")
    (hint,) = diagnose.diagnose("checks", traceback("/srv/mysite/releases/R/blog/views.py", "cgi"), PYTHON,
                                REQUIREMENTS).hints
    assert hint.startswith("Python 3.13 removed the module cgi, which your code imports "
                           "(/srv/mysite/releases/R/blog/views.py)")


def test_url_removed_from_django_says_what_replaces_it():
    found = diagnose.diagnose("checks", sample("import_url_removed"), PYTHON, REQUIREMENTS)
    assert found.gate == "import"
    assert found.decisive.startswith("ImportError: cannot import name 'url' from 'django.conf.urls'")
    (hint,) = found.hints
    assert hint.startswith("since Django 4.0, `url()` from `django.conf.urls` is gone") and \
        "path('post/<int:pk>/'" in hint


def test_django_utils_six_from_a_third_party_package_blames_the_package_not_python():
    output = ('Traceback (most recent call last):\n  File "/srv/mysite/releases/R/.venv/lib/python3.13/'
              'site-packages/markdownx/utils.py", line 3, in <module>\n    from django.utils import six\n'
              "ModuleNotFoundError: No module named 'django.utils.six'\n")
    (hint,) = diagnose.diagnose("checks", output, PYTHON, REQUIREMENTS).hints
    assert hint.startswith("since Django 3.0, `django.utils.six` is gone: a package importing it predates") and \
        "Python 3.13" not in hint


def test_a_module_the_requirements_do_not_list_names_the_package_to_add():
    found = diagnose.diagnose("checks", sample("import_missing_module"), PYTHON, REQUIREMENTS)
    assert found.gate == "import" and found.decisive == "ModuleNotFoundError: No module named 'environ'"
    assert found.hints == ("the code imports environ, but your requirements do not list django-environ: add it "
                           "(with the version you use locally, see `python -m pip freeze`), commit, and deploy "
                           "again.",)
    # Listed but failing anyway is another problem: no such hint then.
    assert diagnose.diagnose("checks", sample("import_missing_module"), PYTHON,
                             REQUIREMENTS + "django-environ==0.12.0\n").hints == ()


def test_collectstatic_is_told_apart_from_the_checks():
    found = diagnose.diagnose("checks", sample("collectstatic_missing_file"), PYTHON, REQUIREMENTS)
    assert found.gate == "collectstatic" and found.headline == "collectstatic failed"
    assert found.decisive.startswith("ValueError: The file 'counter/missing.png' could not be found")
    found = diagnose.diagnose("checks", "STATIC_ROOT is not set: set it, e.g. STATIC_ROOT = ...\n")
    assert found.gate == "collectstatic" and found.decisive.startswith("STATIC_ROOT is not set")


def test_check_errors_are_the_checks_gate_with_the_first_error_first():
    output = ("`manage.py check --deploy` found problems:\nSystemCheckError: System check identified some "
              "issues:\n\nERRORS:\n?: (admin.E403) A 'django.template.backends.django.DjangoTemplates' instance "
              "must be configured in TEMPLATES in order to use the admin application.\n")
    found = diagnose.diagnose("checks", output, PYTHON, REQUIREMENTS)
    assert found.gate == "checks" and found.headline.startswith("Django's checks")
    assert found.decisive.startswith("?: (admin.E403) A 'django.template.backends.django.DjangoTemplates'")


def test_sqlite_at_migrate_says_the_server_gives_postgresql():
    found = diagnose.diagnose("migrate", sample("migrate_sqlite"))
    assert found.gate == "migrate" and found.headline == "manage.py migrate failed"
    assert found.decisive == "sqlite3.OperationalError: unable to open database file"
    (hint,) = found.hints
    assert hint.startswith("your settings use SQLite; the server gives you PostgreSQL via DATABASE_URL")


def test_a_pin_whose_python_requirement_excludes_the_servers_python():
    found = diagnose.diagnose("pip", as_the_step_prints_it(sample("pip_requires_python"), "pip"), PYTHON,
                              REQUIREMENTS + "dataclasses==0.8\n")
    assert found.gate == "pip" and found.decisive == "ERROR: No matching distribution found for dataclasses==0.8"
    (hint,) = found.hints
    assert hint.startswith("dataclasses 0.8 requires Python >=3.6, <3.7, so pip will not install it on "
                           "Python 3.13, the server's Python. Pin a version of dataclasses that supports Python 3.13")


def test_a_pin_that_does_not_exist_at_all():
    output = ("ERROR: Could not find a version that satisfies the requirement Django==9.9 (from versions: 1.1.3, "
              "6.1.3)\nERROR: No matching distribution found for Django==9.9\n")
    (hint,) = diagnose.diagnose("pip", output, PYTHON, "Django==9.9\n").hints
    assert hint.startswith("pip found no release of Django==9.9 that installs on Python 3.13, the server's "
                           "Python (or that version does not exist)")
    output = ("ERROR: Could not find a version that satisfies the requirement djngo (from versions: none)\n"
              "ERROR: No matching distribution found for djngo\n")
    (hint,) = diagnose.diagnose("pip", output, PYTHON, "djngo\n").hints
    assert hint.startswith("pip found no version of djngo at all: check the name's spelling")


def test_a_pin_that_does_not_build_for_the_servers_python_is_named_with_where_the_build_stopped():
    found = diagnose.diagnose("pip", sample("pip_build_failed"), PYTHON, REQUIREMENTS + "scipy==1.11.4\n")
    assert found.decisive == "× Getting requirements to build wheel did not run successfully."
    (hint,) = found.hints
    assert hint.startswith("scipy==1.11.4 (from your requirements) has no ready-made wheel for Python 3.13, the "
                           "server's Python, so pip tried to build it from source on the server, and that failed "
                           "(../meson.build:80:0: ERROR: Unknown compiler(s)")
    output = "  ERROR: Failed building wheel for psycopg2\nERROR: Failed to build installable wheels for some " \
             "pyproject.toml based projects (psycopg2)\n"
    (hint,) = diagnose.diagnose("pip", output, PYTHON, "psycopg2==2.8.6\n").hints
    assert hint.startswith("psycopg2==2.8.6 (from your requirements) has no ready-made wheel")
    assert "use psycopg2-binary or psycopg[binary]" in hint
    output = "ERROR: Failed to build installable wheels for some pyproject.toml based projects (psycopg2)\n"
    (hint,) = diagnose.diagnose("pip", output, PYTHON, "psycopg2==2.8.6\n").hints
    assert hint.startswith("psycopg2==2.8.6 (from your requirements) has no ready-made wheel")


# --- uv's output (tests/unit/gate_output/uv_*: uv 0.13 on Debian 13's Python 3.13, as the build step runs it) ------

def test_uv_finding_no_wheel_for_the_servers_python_names_the_pin_and_the_pythons_it_has():
    found = diagnose.diagnose("pip", as_the_step_prints_it(sample("uv_no_wheel_for_python"), "pip"), PYTHON,
                              REQUIREMENTS + "tensorflow==2.10.0\n")
    assert found.gate == "uv" and found.headline.startswith("uv could not install the requirements")
    assert found.decisive.startswith("cause: Because tensorflow==2.10.0 has no wheels with a matching Python ABI "
                                     "tag (e.g., `cp313`)")
    (hint,) = found.hints
    assert hint.startswith("tensorflow==2.10.0 publishes ready-made wheels only for other Pythons (cp37m, cp38, "
                           "cp39, cp310) and no source to build, so it cannot be installed on Python 3.13, the "
                           "server's Python. Pin a version of tensorflow that supports Python 3.13")


def test_uv_finding_no_such_package_or_version_says_which():
    (hint,) = diagnose.diagnose("pip", sample("uv_not_found"), PYTHON, "djngo\n").hints
    assert hint.startswith("the package index has no package called djngo: check the name's spelling")
    found = diagnose.diagnose("pip", sample("uv_no_such_version"), PYTHON, "Django==9.9\n")
    assert found.decisive.startswith("cause: Because there is no version of django==9.9")
    assert found.hints[0].startswith("django has no release 9.9 on the package index. Pin a version of django "
                                     "that supports Python 3.13")


def test_a_build_that_fails_under_uv_names_the_pin_and_the_builds_last_words():
    found = diagnose.diagnose("pip", as_the_step_prints_it(sample("uv_build_failed"), "pip"), PYTHON,
                              REQUIREMENTS + "PyYAML==5.4.1\n")
    assert found.gate == "uv" and found.decisive == "error: Failed to build `pyyaml==5.4.1`"
    (hint,) = found.hints
    assert hint == ("PyYAML==5.4.1 (from your requirements) has no ready-made wheel for Python 3.13, the server's "
                    "Python, so uv tried to build it from source on the server, and that failed (AttributeError: "
                    "'build_ext' object has no attribute 'cython_sources'). Pin a newer version that publishes "
                    "wheels for Python 3.13 (its PyPI page lists them under \"Download files\").")
    assert found.tail.splitlines()[-1].startswith("hint: Build failures usually indicate")


def test_pips_own_output_is_still_read_as_pips():
    assert diagnose.diagnose("pip", sample("pip_build_failed"), PYTHON).gate == "pip"


def test_the_tail_is_the_gates_own_output_never_a_report_or_trap_line():
    found = diagnose.diagnose("checks", as_the_step_prints_it(sample("import_url_removed"), "checks"))
    assert found.tail.splitlines()[-1].startswith("ImportError: cannot import name 'url'")
    assert REPORT not in found.tail and "failed (checks)" not in found.tail
    assert "objects imported automatically" not in found.tail
    text = found.explain("/srv/mysite/failed/R/.gangway/build.log", lines=5)
    first, *rest = text.splitlines()
    assert first == f"  {found.decisive}"
    assert rest[0].startswith("hint: since Django 4.0, `url()`")
    assert "/srv/mysite/failed/R/.gangway/build.log" in rest[1]
    assert rest[2] == "Its last lines:" and len(rest[3:]) == 5 and rest[-1].strip() == found.decisive


def test_an_output_with_no_error_line_falls_back_to_its_last_line():
    found = diagnose.diagnose("checks", "something odd\nKilled\n" + f"{REPORT} {{}}\n")
    assert found.decisive == "Killed" and found.gate == "checks"


def test_the_table_of_django_versions():
    assert compat.runs_on_names((3, 13)) == "5.1 (from 5.1.3), 5.2 LTS, 6.0, 6.1"
    assert compat.runs_on_names((3, 11)) == "4.1 (from 4.1.3), 4.2 LTS, 5.0, 5.1, 5.2 LTS"
    assert compat.runs_on_names((2, 5)) == ""


# --- the release check's readiness gate, and the gate its report lines name ------------------------------------

NOT_READY = """\
{report} {{"gate": "readiness"}}
the settings are not ready for production:
- DEBUG is on in production: error pages would show your code and settings to anyone; set DEBUG = False
- ALLOWED_HOSTS (['localhost']) does not cover example.com: Django would answer 400 Bad Request
- STATIC_ROOT is /srv/elsewhere/static, outside the project: nginx serves only the release's static/
"""


def test_a_readiness_failure_shows_every_finding_first_then_the_log():
    output = as_the_step_prints_it("5 objects imported automatically (use -v 2 for details).\n"
                                   + NOT_READY.format(report=REPORT), "checks")
    for gate in ("readiness", ""):  # named by the report line, or told from the output without one
        found = diagnose.diagnose("checks", output, PYTHON, REQUIREMENTS, gate=gate)
        assert found.gate == "readiness" and found.headline == "the settings are not ready for production"
        assert found.headline == readiness.NOT_READY  # the words release_check.py exits with
        assert found.hints == () and found.tail == ""
        log = "/srv/mysite/failed/R/.gangway/build.log"
        assert found.explain(log).splitlines() == [
            "  - DEBUG is on in production: error pages would show your code and settings to anyone; set DEBUG "
            "= False",
            "  - ALLOWED_HOSTS (['localhost']) does not cover example.com: Django would answer 400 Bad Request",
            "  - STATIC_ROOT is /srv/elsewhere/static, outside the project: nginx serves only the release's "
            "static/",
            f"The gate's full output is kept on the server in {log} (readable by root: `sudo less {log}`).",
        ]


def test_the_gate_comes_from_the_report_line_not_from_guessing():
    crash = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nRuntimeError: boom\n'
    for gate in ("collectstatic", "migrations", "bytecode", "checks"):
        found = diagnose.diagnose("checks", as_the_step_prints_it(crash, "checks"), PYTHON, REQUIREMENTS, gate=gate)
        assert found.gate == gate and found.headline == diagnose.HEADLINES[gate]
        assert found.decisive == "RuntimeError: boom"
    # The checks import the URLconf: an import error there is the project's import, whatever the part.
    found = diagnose.diagnose("checks", sample("import_url_removed"), PYTHON, REQUIREMENTS, gate="checks")
    assert found.gate == "import"
    # Without a report line (Django's setup failed before the check began), the output tells.
    assert diagnose.diagnose("checks", as_the_step_prints_it(crash, "checks")).gate == "checks"
    assert diagnose.diagnose("checks", crash, gate="nonsense").gate == "checks"


# --- keeping the whole output on the server ------------------------------------------------------------------

def run_failed_gate(release: Path, output: str) -> subprocess.CompletedProcess:
    keep = commands.keep_gate_output(str(release))
    return subprocess.run(["sh", "-c", f"out={shlex.quote(output)}\n{keep}"], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("value", ["$(touch CANARY)", "`touch CANARY`", "'; touch CANARY; '", "a\ntouch CANARY"])
def test_a_failed_gate_keeps_its_whole_output_owner_only_and_prints_its_end(tmp_path, value):
    release = tmp_path / "release"
    (release / ".gangway").mkdir(parents=True)
    output = "\n".join(f"line {n}" for n in range(400)) + f"\n{value}"
    out = run_failed_gate(release, output)
    log = release / commands.GATE_LOG
    assert log.read_text() == output + "\n" and log.stat().st_mode & 0o777 == 0o600
    assert out.stderr.splitlines()[-1] == value.splitlines()[-1]
    assert len(out.stderr.splitlines()) == commands.GATE_OUTPUT_LINES
    assert not (tmp_path / "CANARY").exists() and not Path("CANARY").exists()
    assert commands.gate_log("/srv/mysite/failed/R") == "/srv/mysite/failed/R/.gangway/build.log"
    assert_shellcheck_clean(f"out=$(false)\n{commands.keep_gate_output('/srv/mysite/releases/R')}")


def test_the_log_is_never_written_through_a_link_the_project_left(tmp_path):
    release, elsewhere = tmp_path / "release", tmp_path / "elsewhere"
    release.mkdir()
    elsewhere.mkdir()
    (release / ".gangway").symlink_to(elsewhere)
    run_failed_gate(release, "Traceback ...")
    assert list(elsewhere.iterdir()) == []
    assert not (release / ".gangway").is_symlink() and (release / commands.GATE_LOG).read_text() == "Traceback ...\n"


@pytest.mark.parametrize("value", ["$(touch CANARY)", "`touch CANARY`", "'; touch CANARY; '", "a\ntouch CANARY"])
def test_a_hostile_release_path_stays_one_path(tmp_path, value):
    release = tmp_path / value
    (release / ".gangway").mkdir(parents=True)
    run_failed_gate(release, "output")
    assert (release / commands.GATE_LOG).read_text() == "output\n"
    assert not (tmp_path / "CANARY").exists() and not Path("CANARY").exists()


def test_a_failed_gate_passes_on_the_report_lines_naming_its_part_and_no_other(tmp_path):
    release = tmp_path / "release"
    (release / ".gangway").mkdir(parents=True)
    output = (f'{REPORT} {{"gate": "readiness"}}\n{REPORT} {{"gate": "checks"}}\n'
              f'{REPORT} {{"free_kib": 0}}\nSystemCheckError: ...\n')
    out = run_failed_gate(release, output)
    assert out.stdout == f'{REPORT} {{"gate": "readiness"}}\n{REPORT} {{"gate": "checks"}}\n'
    assert parse_reports(out.stdout) == {"gate": "checks"}  # the part running when it failed
    assert out.stderr.strip("\n") == output.strip("\n")  # the tail, as the gate printed it


# What `manage.py loaddata` prints when a full dumpdata meets a database that migrate filled (PostgreSQL, then
# SQLite's wording of the same error).
LOADDATA_DUPLICATE = '''Traceback (most recent call last):
  File "/srv/blog/releases/r/.venv/lib/python3.13/site-packages/django/db/backends/utils.py", line 105, in _execute
    return self.cursor.execute(sql, params)
psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "auth_permission_content_type_id_codename_01ab375a_uniq"
DETAIL:  Key (content_type_id, codename)=(1, add_logentry) already exists.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/srv/blog/releases/r/manage.py", line 22, in <module>
    main()
django.db.utils.IntegrityError: Problem installing fixture '/tmp/data.json': Could not load auth.Permission(pk=1): duplicate key value violates unique constraint "auth_permission_content_type_id_codename_01ab375a_uniq"
DETAIL:  Key (content_type_id, codename)=(1, add_logentry) already exists.
'''


@pytest.mark.parametrize("output", [
    LOADDATA_DUPLICATE,
    "django.db.utils.IntegrityError: Problem installing fixture 'data.json': Could not load "
    "contenttypes.ContentType(pk=1): UNIQUE constraint failed: django_content_type.app_label, "
    "django_content_type.model",
])
def test_loaddata_of_django_s_own_rows_gets_the_exclude_hint(output):
    (hint,) = diagnose.command_hints(output)
    assert "--exclude auth.permission --exclude contenttypes" in hint
    found = diagnose.diagnose("migrate", output)
    assert found.decisive.startswith("django.db.utils.IntegrityError: Problem installing fixture")
    assert hint in found.hints


def test_a_duplicate_key_in_the_projects_own_table_gets_no_exclude_hint():
    output = ('django.db.utils.IntegrityError: Problem installing fixture \'data.json\': Could not load '
              'blog.Post(pk=1): duplicate key value violates unique constraint "blog_post_pkey"')
    assert diagnose.command_hints(output) == []
    assert not any("--exclude" in hint for hint in diagnose.diagnose("migrate", output).hints)
