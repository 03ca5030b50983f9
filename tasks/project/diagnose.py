"""What went wrong when a release failed one of its gates, read from the gate's output.

A gate is a step that runs the project's code or its requirements on the server: uv (pip, before) building the
Python environment, importing the project, Django's checks, collectstatic, migrate. Its output is a traceback or
pip's error report, whose last line is rarely the one that matters. `diagnose` finds the line that decides,
names the gate in a headline, and adds hints for the causes people meet most: a Django too old for the
server's Python, a pin with no release for that Python, SQLite settings, a module the requirements lack.
Pure: text in, text out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import compat, readiness
from ..commands.shell import REPORT

HEADLINES = {
    "pip": "pip could not install the requirements into the release's Python environment",
    "uv": "uv could not install the requirements into the release's Python environment",
    "import": "the project could not be imported (its settings, apps or URLs)",
    "readiness": readiness.NOT_READY,
    "checks": "Django's checks (manage.py check --deploy) found errors",
    "collectstatic": "collectstatic failed",
    "migrations": "the project's migrations could not be read",
    "bytecode": "compiling the project's Python files failed",
    "migrate": "manage.py migrate failed",
}
# The gates the release check names in its report lines (templates/deploy/release_check.py), in its order.
REPORTED_GATES = ("readiness", "checks", "collectstatic", "migrations", "bytecode")

# Modules Python removed: a project (or its Django) that imports them is older than the server's Python.
REMOVED_FROM_PYTHON = {
    "distutils": "3.12", "imp": "3.12", "asynchat": "3.12", "asyncore": "3.12", "smtpd": "3.12",
    "cgi": "3.13", "cgitb": "3.13", "crypt": "3.13", "pipes": "3.13", "telnetlib": "3.13", "nntplib": "3.13",
    "audioop": "3.13", "chunk": "3.13", "imghdr": "3.13", "mailcap": "3.13", "sndhdr": "3.13", "uu": "3.13",
    "xdrlib": "3.13", "aifc": "3.13", "msilib": "3.13", "nis": "3.13", "ossaudiodev": "3.13", "spwd": "3.13",
    "sunau": "3.13", "lib2to3": "3.13",
}

# Import names whose package is called something else on PyPI.
PACKAGE_OF_MODULE = {
    "environ": "django-environ", "dj_database_url": "dj-database-url", "decouple": "python-decouple",
    "dotenv": "python-dotenv", "PIL": "Pillow", "yaml": "PyYAML", "rest_framework": "djangorestframework",
    "crispy_forms": "django-crispy-forms", "corsheaders": "django-cors-headers",
    "debug_toolbar": "django-debug-toolbar", "bs4": "beautifulsoup4", "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "storages": "django-storages",
    "allauth": "django-allauth", "taggit": "django-taggit", "ckeditor": "django-ckeditor",
    "markdownx": "django-markdownx", "widget_tweaks": "django-widget-tweaks", "import_export": "django-import-export",
    "django_extensions": "django-extensions", "django_filters": "django-filter", "dateutil": "python-dateutil",
    "jwt": "PyJWT", "sklearn": "scikit-learn", "cv2": "opencv-python-headless",
}

# The release check's readiness gate: its first line, then one line a blocking finding.
_NOT_READY = re.compile(rf"^{re.escape(readiness.NOT_READY)}:$")
_FINDING = re.compile(r"^- .+")
# Noise the gate adds around the output: the tool's own report lines, the step trap's line, Django's shell.
_NOISE = re.compile(rf"^({re.escape(REPORT)} |failed \([^)]*\): |\d+ objects? imported automatically|"
                    r"Automatic imports are disabled)")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Warning|Interrupt)(?::\s.*|$)")
_PIP_DECISIVE = (
    re.compile(r"^ERROR: No matching distribution found for .+"),
    re.compile(r"^ERROR: Could not find a version that satisfies the requirement .+"),
    re.compile(r"^ERROR: (Failed building wheel for|Failed to build) .+"),
    re.compile(r"^(ERROR: )?Failed to build installable wheels .+"),
    re.compile(r"^× .+ did not run successfully\."),
    re.compile(r"^ERROR: .+"),
    re.compile(r"^error: .+"),
)
# uv's errors, as it writes them when its output is not a terminal (`error:` then `cause:` lines), or on one.
_UV_OUTPUT = re.compile(r"^(?:error: |× )(?:No solution found when resolving dependencies|Failed to build `|"
                        r"Failed to (?:download|fetch|prepare)|The build backend returned an error)", re.M)
_UV_DECISIVE = (
    re.compile(r"^(?:error: |× )Failed to build `.+`"),
    re.compile(r"^(?:cause: |╰─▶ )Because .+"),
    re.compile(r"^(?:error: |× ).+"),
)
_IMPORT_ERROR = re.compile(r"(ModuleNotFoundError|ImportError|SyntaxError|IndentationError)\b")
_CHECK_ERROR = re.compile(r"^\S*: \([\w.]+\.E\d+\) .+")
# loaddata of a full dumpdata into a database that migrate filled: the rows Django makes itself (permissions,
# content types) are there already, under the same unique keys. PostgreSQL's and SQLite's wording.
_DUPLICATE_BUILTIN = re.compile(
    r"(duplicate key value violates unique constraint \"?(auth_permission|django_content_type)\w*\"?"
    r"|UNIQUE constraint failed: (auth_permission|django_content_type)\.)")
LOADDATA_HINT = ("the fixture holds rows Django creates itself when it migrates (permissions and content types), "
                 "and the database has them already: dump without them (`python manage.py dumpdata --natural-"
                 "foreign --natural-primary --exclude auth.permission --exclude contenttypes > data.json`) and "
                 "load that file.")


@dataclass(frozen=True)
class Diagnosis:
    gate: str            # a key of HEADLINES
    decisive: str        # the line that says what went wrong (the readiness gate: one line a finding)
    hints: tuple[str, ...]
    tail: str            # the end of the gate's own output (without the tool's report lines)

    @property
    def headline(self) -> str:
        return HEADLINES[self.gate]

    def explain(self, log: str = "", lines: int = 25) -> str:
        """The decisive line(s), the hints, where the full output is, then the output's tail."""
        parts = [f"  {line}" for line in self.decisive.splitlines()]
        parts += [f"hint: {hint}" for hint in self.hints]
        if log:
            parts.append(f"The gate's full output is kept on the server in {log} (readable by root: "
                         f"`sudo less {log}`).")
        tail = self.tail.splitlines()[-lines:]
        if tail:
            parts.append("Its last lines:\n" + "\n".join(f"    {line}" for line in tail))
        return "\n".join(parts)


def gate_output(text: str) -> list[str]:
    """The lines the gate itself printed: without report lines, the step's trap line and Django shell's
    greeting."""
    return [line.rstrip() for line in text.splitlines() if not _NOISE.match(line)]


def diagnose(step: str, output: str, python: str = "", requirements: str = "", gate: str = "") -> Diagnosis:
    """Read the output of the failed `step` ("pip", "checks" or "migrate"). `gate` is the release check's part
    that was running, from its report lines (see REPORTED_GATES); without it the output tells. `python` is the
    server's Python version (e.g. 3.13.5), `requirements` the project's requirements file: both make hints
    precise."""
    lines = gate_output(output)
    while lines and not lines[0].strip():
        lines.pop(0)
    tail = "\n".join(lines).strip("\n")
    server = compat.python_version(python)
    if step == "pip" and _UV_OUTPUT.search(tail):
        decisive = _first_match(lines, _UV_DECISIVE) or _last_line(lines)
        return Diagnosis("uv", decisive, tuple(_uv_hints(lines, server, requirements)), tail)
    if step == "pip":
        decisive = _first_match(lines, _PIP_DECISIVE) or _last_line(lines)
        return Diagnosis("pip", decisive, tuple(_pip_hints(lines, server, requirements)), tail)
    findings = _readiness_findings(lines)
    if findings:  # every blocking finding is decisive: each one is a thing to fix before the next deploy
        rest = "\n".join(line for line in lines if line not in findings and not _NOT_READY.match(line))
        return Diagnosis("readiness", "\n".join(findings), (), rest.strip("\n"))
    decisive = _decisive_python_error(lines)
    if step == "migrate":
        gate = "migrate"
    elif gate not in REPORTED_GATES:
        gate = _checks_gate(lines, decisive)
    elif gate == "checks" and _IMPORT_ERROR.match(decisive):  # the URLconf is imported by the checks
        gate = "import"
    return Diagnosis(gate, decisive, tuple(_python_hints(lines, decisive, server, requirements)), tail)


# --- which gate, which line ----------------------------------------------------------------------------------

def _first_match(lines: list[str], patterns) -> str:
    for pattern in patterns:
        for line in lines:
            if pattern.match(line.strip()):
                return line.strip()
    return ""


def _last_line(lines: list[str]) -> str:
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _readiness_findings(lines: list[str]) -> list[str]:
    """The finding lines after the readiness gate's first line."""
    start = next((i for i, line in enumerate(lines) if _NOT_READY.match(line)), None)
    if start is None:
        return []
    found = []
    for line in lines[start + 1:]:
        if not _FINDING.match(line):
            break
        found.append(line)
    return found


def _decisive_python_error(lines: list[str]) -> str:
    """The first exception of a traceback chain is its cause ("The above exception was the direct cause",
    "During handling of the above exception"): manage.py's "Couldn't import Django" hides the real error.
    Without a traceback: a check's error line, else the last line (the gate's own message)."""
    check_error = _first_match(lines, (_CHECK_ERROR,))  # the first of Django's check errors says most
    for line in lines:
        if _EXCEPTION.match(line):
            return check_error if line.startswith("SystemCheckError") and check_error else line.strip()
    return check_error or _last_line(lines)


def _checks_gate(lines: list[str], decisive: str) -> str:
    """The release check imports the project, runs Django's checks, then collectstatic: tell them apart from
    the output (the frames a traceback passed through, or the check's own messages)."""
    text = "\n".join(lines)
    if _IMPORT_ERROR.match(decisive) or "Couldn't import Django" in text:
        return "import"
    if "found problems" in text or "SystemCheckError" in text:
        return "checks"
    if re.search(r"collectstatic\.py|staticfiles/storage\.py|^STATIC_ROOT is ", text, re.M):
        return "collectstatic"
    if re.search(r"management/commands/check\.py|core/checks/", text):
        return "checks"
    # Before the check ran at all: Django's setup (settings, apps) failed, which is importing the project.
    if "django/__init__.py" in text or "apps/registry.py" in text or "conf/__init__.py" in text:
        return "import"
    return "checks"


# --- hints -------------------------------------------------------------------------------------------------

def _pins(requirements: str) -> dict[str, str]:
    """Normalised package name -> its requirement line, for the lines that name a package."""
    pins = {}
    for raw in requirements.splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and not line.startswith("-"):
            pins[_normal(match.group(1))] = line
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _too_old_for_python(python: tuple[int, int] | None, requirements: str, why: str) -> str:
    """Which Django the requirements pin, that it does not run on the server's Python, and which do."""
    pinned = compat.django_requirement(requirements)
    why = f"{why}: " if why else ""
    if pinned and pinned[1] and python and compat.runs_on(pinned[1], python) is False:
        return why + readiness.versions(pinned[1], python, "your requirements")[0].text + "."
    runs = compat.runs_on_names(python) if python else ""
    if not runs:
        return f"{why}the Django in your requirements is probably older than the server's Python; pin a Django " \
               "that supports it."
    return (f"{why}the Django in your requirements does not run on the server's {compat.python_name(python)}: "
            f"{runs} run on it; pin one in your requirements (an LTS is supported longest).")


def _python_hints(lines: list[str], decisive: str, python: tuple[int, int] | None, requirements: str) -> list[str]:
    text = "\n".join(lines)
    hints = []
    pinned = compat.django_requirement(requirements)
    version = pinned[1] if pinned else None
    missing = re.search(r"No module named '([\w.]+)'", decisive)
    top = missing.group(1).split(".")[0] if missing else ""
    raised_in = _raised_in(lines, decisive)
    package = re.search(r"/site-packages/([^/]+)/", raised_in)
    package = package.group(1) if package else ""
    old_django = bool(version and python and compat.runs_on(version, python) is False)
    removed_in = REMOVED_FROM_PYTHON.get(top)
    if removed_in and (package == "django" or old_django):
        hints.append(_too_old_for_python(python, requirements, f"Python {removed_in} removed the module {top}, "
                                                               "which Django imports"))
    elif removed_in:
        who = (f"{package} imports (see the traceback): upgrade {package} in your requirements to a version made "
               f"for {compat.python_name(python) if python else 'the Python the server runs'}" if package else
               f"your code imports ({raised_in or 'see the traceback'}): replace it as Python's \"What's New in "
               f"Python {removed_in}\" says")
        hints.append(f"Python {removed_in} removed the module {top}, which {who}.")
    elif old_django or (package == "django" and "No module named 'django.utils.six" in decisive):
        hints.append(_too_old_for_python(python, requirements, "Django failed while importing itself"
                                         if package == "django" else ""))
    else:
        missed = compat.break_behind(text)
        hints += [missed.hint] if missed else []
    if _DUPLICATE_BUILTIN.search(text):
        hints.append(LOADDATA_HINT)
    if re.search(r"unable to open database file|attempt to write a readonly database|sqlite3", decisive):
        hints.append("your settings use SQLite; the server gives you PostgreSQL via DATABASE_URL (the local "
                     "socket, peer authentication, no password; DJANGO_DB_NAME names the database). "
                     "Read DATABASES from the environment in your production settings (`fab init` writes such "
                     "a settings module), and move your data with `fab import-data`.")
    elif re.search(r"Error loading (psycopg2|psycopg) module|No module named 'psycopg", decisive):
        hints.append(f"the PostgreSQL driver is missing: add {compat.postgres_driver(version or (4, 2))} to your "
                     "requirements.")
    elif top and not removed_in and not top.startswith("django"):
        package = PACKAGE_OF_MODULE.get(top, top)
        if _normal(package.split("[")[0]) not in _pins(requirements):
            hints.append(f"the code imports {top}, but your requirements do not list {package}: add it (with the "
                         f"version you use locally, see `python -m pip freeze`), commit, and deploy again.")
    return hints


def command_hints(output: str) -> list[str]:
    """Hints for a management command that failed (`fab manage -- ...`), from its output."""
    return [LOADDATA_HINT] if _DUPLICATE_BUILTIN.search(output) else []


def _raised_in(lines: list[str], decisive: str) -> str:
    """The file of the innermost frame above the decisive line."""
    frames = []
    for line in lines:
        if line.strip() == decisive:
            break
        match = re.match(r'\s*File "([^"]+)", line \d+', line)
        if match:
            frames.append(match.group(1))
    return frames[-1] if frames else ""


def _pip_hints(lines: list[str], server: tuple[int, int] | None, requirements: str) -> list[str]:
    python = "%d.%d" % server if server else ""
    text = "\n".join(lines)
    on = f"Python {python}, the server's Python" if python else "the server's Python"
    pins = _pins(requirements)
    nothing = re.search(r"requirement (\S+) \(from versions: none\)", text)
    if nothing:
        return [f"pip found no version of {nothing.group(1)} at all: check the name's spelling in your "
                "requirements; if it is right, the server could not reach the package index (a proxy "
                "setting? see proxy in the inventory)."]
    missing = re.search(r"No matching distribution found for (\S+)", text)
    if missing:
        wanted = missing.group(1)
        name = re.match(r"[A-Za-z0-9._-]+", wanted).group(0)
        needs = re.search(rf"(?:^|[:;]\s*){re.escape(_version(wanted))} Requires-Python ([^;\n]+)", text, re.M) \
            if _version(wanted) else None
        why = (f"{name} {_version(wanted)} requires Python {needs.group(1).strip()}, so pip will not install it on "
               f"{on}" if needs else f"pip found no release of {wanted} that installs on {on} (or that "
                                      f"version does not exist)")
        return [f"{why}. Pin a version of {name} that supports Python {python or 'the server runs'} (pip listed "
                f"the versions it found), or remove the line if your project does not import {name}; "
                f"`python -m pip index versions {name}` shows them."]
    failed = _failed_package(text)
    if failed or re.search(r"did not run successfully|metadata-generation-failed|Failed building wheel", text):
        stopped = next((line.strip()[:200] for line in lines if line.startswith(" ") and
                        re.search(r"(?i)\berror\b", line) and "subprocess-exited-with-error" not in line), "")
        return [_build_hint("pip", failed, pins, on, python, stopped)]
    return []


def _build_hint(tool: str, failed: str, pins: dict[str, str], on: str, python: str, stopped: str) -> str:
    """A requirement that `tool` had to build from source, and the build failed."""
    pin = pins.get(_normal(failed), failed) if failed else ""
    which = f"{pin} (from your requirements)" if pin else "one of your requirements (see the output)"
    special = (" For psycopg2, use psycopg2-binary or psycopg[binary], which come as wheels."
               if failed and _normal(failed) == "psycopg2" else "")
    return (f"{which} has no ready-made wheel for {on}, so {tool} tried to build it from source on the server, "
            "and that failed" + (f" ({stopped})" if stopped else "") + ". Pin a newer version that publishes "
            f"wheels for Python {python or 'it'} (its PyPI page lists them under \"Download files\").{special}")


def _uv_hints(lines: list[str], server: tuple[int, int] | None, requirements: str) -> list[str]:
    """uv's resolver says why in one sentence ("Because ..."); its build failures name the package."""
    python = "%d.%d" % server if server else ""
    text = "\n".join(lines)
    on = f"Python {python}, the server's Python" if python else "the server's Python"
    pins = _pins(requirements)
    supported = f"Pin a version of {{name}} that supports Python {python or 'the server runs'}, or remove the line " \
                "if your project does not import {name}; `python -m pip index versions {name}` lists the versions."
    if unknown := re.search(r"Because (\S+) was not found in the package registry", text):
        return [f"the package index has no package called {unknown.group(1)}: check the name's spelling in your "
                "requirements; if it is right, the server could not reach the package index (a proxy setting? "
                "see proxy in the inventory)."]
    if missing := re.search(r"Because there is no version of (\S+?)(==\S+)? and", text):
        name = missing.group(1)
        return [f"{name} has no release {missing.group(2)[2:] if missing.group(2) else 'that matches'} on the "
                f"package index. " + supported.format(name=name)]
    if wheels := re.search(r"Because (([A-Za-z0-9._-]+)\S*) has no wheels with a matching Python ABI tag", text):
        name = wheels.group(2)
        tags = re.search(r"with the following Python ABI tags: (.+)$", text, re.M)
        return [f"{wheels.group(1)} publishes ready-made wheels only for other Pythons"
                + (f" ({tags.group(1).replace('`', '')})" if tags else "") + f" and no source to build, so it cannot "
                f"be installed on {on}. " + supported.format(name=name)]
    if built := re.search(r"Failed to build `([A-Za-z0-9._-]+)", text):
        # The build's own last words: the end of its [stderr] (a compiler error, a traceback's exception).
        said = [line.strip() for line in lines if line.startswith("  ") and line.strip()]
        stopped = said[-1][:200] if said and not said[-1].startswith("cause:") else ""
        return [_build_hint("uv", built.group(1), pins, on, python, stopped)]
    return []


def _version(requirement: str) -> str:
    match = re.search(r"==\s*([\w.!+-]+)", requirement)
    return match.group(1) if match else ""


def _failed_package(text: str) -> str:
    """The package whose build failed, as pip or its build backend names it."""
    for pattern in (r"Failed building wheel for ([\w.-]+)",
                    r"Failed to build installable wheels for some pyproject\.toml based projects \(([\w.-]+)",
                    r"Failed to build (?!installable)([\w.-]+)",
                    r"pip-install-[^/\s]+/([A-Za-z0-9_.-]+?)_[0-9a-f]{32}", r"Project name: ([\w.-]+)",
                    r"Building wheel for ([\w.-]+) \("):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return ""
