"""The user's Django project on this machine: where it is, what manage.py and its settings package say, and its
settings as production would read them (templates/deploy/readiness_facts.py, in a Python process of its own).

The same facts script runs on the server at every deploy: `check_script` packs it, with the modules that word
the findings, in front of templates/deploy/release_check.py.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import shell
from .inventory import App
from .layout import Layout
from .release_commands import release_environment
from .render import TEMPLATES

FACTS_SCRIPT = TEMPLATES / "deploy" / "readiness_facts.py"
HERE = Path(__file__).resolve().parent
# Django's own tables: a database holding rows only in these has no content of the user's.
_DJANGO_TABLES = {"django_migrations", "django_content_type", "auth_permission", "django_session",
                  "sqlite_sequence", "django_admin_log"}
# The variables of this shell that reading the settings here keeps: what finds and runs Python, and the locale.
_KEPT_VARIABLES = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV",
                   "PYTHONHOME", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "SYSTEMROOT"}
_SETTINGS_DEFAULT = re.compile(r"""setdefault\(\s*['"]DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([A-Za-z0-9_.]+)['"]""")


class ProjectError(Exception):
    """Not a Django project gangway can read; the message says why and what to do."""


@dataclass(frozen=True)
class Project:
    directory: Path
    settings_module: str  # the one manage.py names, e.g. mysite.settings

    @property
    def package(self) -> str:
        """The settings' package, e.g. mysite (a settings module at the top level has none)."""
        return self.settings_module.rpartition(".")[0]

    @property
    def package_dir(self) -> Path:
        return self.directory.joinpath(*self.package.split(".")) if self.package else self.directory

    @property
    def production_module(self) -> str:
        return f"{self.package}.settings_production" if self.package else "settings_production"

    @property
    def production_file(self) -> Path:
        return self.package_dir / "settings_production.py"

    @property
    def wsgi_module(self) -> str:
        """The WSGI module next to the settings (startproject's layout), else '' (unknown)."""
        candidate = f"{self.package}.wsgi" if self.package else "wsgi"
        return candidate if (self.package_dir / "wsgi.py").is_file() else ""

    def media_files(self) -> int:
        """How many files the project keeps in media/ (uploads made with runserver, a logo kept in the repo)."""
        media = self.directory / "media"
        return sum(1 for path in media.rglob("*") if path.is_file()) if media.is_dir() else 0

    def sqlite_with_content(self, name: str = "") -> Path | None:
        """The local SQLite database (`name`, else db.sqlite3) when it holds rows beyond Django's own."""
        path = Path(name) if name else self.directory / "db.sqlite3"
        if not path.is_file():
            return None
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
                for table in tables:
                    if table not in _DJANGO_TABLES and db.execute(
                            f'select 1 from "{table.replace(chr(34), chr(34) * 2)}" limit 1').fetchone():
                        return path
        except sqlite3.Error:
            return None
        return None


def find(directory: Path) -> Project:
    """The project in `directory`: manage.py and the settings module it sets."""
    directory = directory.resolve()
    manage = directory / "manage.py"
    if not manage.is_file():
        raise ProjectError(f"{directory} has no manage.py: run this in your Django project's directory (the one "
                           "with manage.py), or pass --project DIR")
    match = _SETTINGS_DEFAULT.search(manage.read_text(errors="replace"))
    if not match:
        raise ProjectError(f"{manage} does not set DJANGO_SETTINGS_MODULE the usual way (os.environ.setdefault("
                           "'DJANGO_SETTINGS_MODULE', 'mysite.settings')), so the settings cannot be found; add "
                           "that line as `django-admin startproject` writes it")
    return Project(directory, match.group(1))


def read_requirements(path: Path, seen: frozenset[Path] = frozenset()) -> str | None:
    """The requirements file's text with the files it includes (-r other.txt) after it; None if missing."""
    if not path.is_file() or path in seen:
        return None if not path.is_file() else ""
    text = path.read_text(errors="replace")
    included = re.findall(r"(?m)^\s*(?:-r|--requirement)[\s=]+(\S+)", text)
    return "\n".join([text] + [read_requirements(path.parent / name, seen | {path}) or "" for name in included])


def managed_environment(app: App, address: str) -> dict[str, str]:
    """The variables gangway keeps in the app's shared/env on the server, app.env among them (the secret key
    aside: the server generates it and keeps it there)."""
    return {
        **dict(app.env),
        "DJANGO_ALLOWED_HOSTS": ",".join(app.domains or (address,)),
        "DJANGO_DB_NAME": app.name,
        # For settings that read DATABASE_URL (dj-database-url, django-environ): the local socket, and the
        # app's own Unix identity as its database role (peer authentication), so there is no password.
        "DATABASE_URL": f"postgres:///{app.name}",
        "DJANGO_MEDIA_ROOT": Layout(app.name).media,
        "DJANGO_HTTPS": "1" if app.domains else "0",  # TLS needs names: certificates are issued for domains
        **({"DJANGO_SETTINGS_MODULE": app.settings_module} if app.settings_module else {}),
    }


def server_environment(app: App, address: str, directory: Path) -> dict[str, str]:
    """What the server gives a release of the app, for reading its settings here: the managed variables, a
    throwaway secret key, and what each release gets of its own, with `directory` as the release."""
    return {**managed_environment(app, address), "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            **release_environment(Layout(app.name), "local", str(directory))}


@dataclass(frozen=True)
class LocalFacts:
    facts: dict | None   # None: the settings could not be imported here
    django: str          # the Django installed here ('' if none)
    error: str           # why the settings could not be imported


def local_facts(project: Project, settings_module: str, environment: dict[str, str]) -> LocalFacts:
    """Import the settings with this machine's Python (the one running fab) in the project's directory. Only
    the settings: the apps are not loaded, so a database driver that is missing here does not matter."""
    program = "\n".join([
        "import json",
        "import django",
        f"print({shell.REPORT!r} + ' ' + json.dumps({{'django': django.get_version()}}), flush=True)",
        FACTS_SCRIPT.read_text(),
        f"print({shell.REPORT!r} + ' ' + json.dumps({{'facts': readiness_facts}}))",
    ])
    env = {**_inherited(os.environ), **environment, "DJANGO_SETTINGS_MODULE": settings_module,
           "PYTHONDONTWRITEBYTECODE": "1"}  # as on the server; and no __pycache__ left in the project
    try:
        result = subprocess.run([sys.executable, "-c", program], cwd=project.directory, env=env,
                                capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return LocalFacts(None, "", "importing the settings took longer than two minutes")
    report = shell.parse_reports(result.stdout)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return LocalFacts(report.get("facts") if result.returncode == 0 else None, report.get("django", ""),
                      lines[-1].strip() if lines else f"the import ended with status {result.returncode}")


def _inherited(environ: dict[str, str]) -> dict[str, str]:
    """What of this shell's environment the settings are read with: only what Python itself needs. Anything
    else (DEBUG=1, DATABASE_URL from a .env) is the laptop's, which the server does not set."""
    return {name: value for name, value in environ.items()
            if name in _KEPT_VARIABLES or name.startswith("LC_")}


def check_program(main: str) -> str:
    """`main` (templates/deploy/release_check.py) preceded by the facts script and, importable, the modules
    that word the findings: one program, run on the server by tasks.programs (it travels as data, whatever
    its size)."""
    modules = {name: (HERE / f"{name}.py").read_text() for name in ("compat", "readiness")}
    return "\n".join([
        "import sys as _sys, types as _types",
        "_package = _types.ModuleType('gangway_check')",
        "_package.__path__ = []",
        "_sys.modules['gangway_check'] = _package",
        f"for _name, _source in {modules!r}.items():",
        "    _module = _types.ModuleType('gangway_check.' + _name)",
        "    _module.__package__ = 'gangway_check'",
        "    _sys.modules[_module.__name__] = _module",
        "    setattr(_package, _name, _module)",
        "    exec(compile(_source, _name + '.py', 'exec'), _module.__dict__)",
        "readiness = _package.readiness",
        FACTS_SCRIPT.read_text(),
        main,
    ])

