"""Is the project ready for production? Facts in, findings out: each one plain sentence with the problem, the
reason and the fix, blocking when the site would be broken or unsafe. Pure.

The facts come from templates/deploy/readiness_facts.py, which reads the project's settings with the
environment production gives them: on the server at every deploy (release_check.py), and on the developer's
machine under `fab init`. This module is also shipped to the server with that script, so it imports nothing
but the standard library and compat.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from . import compat

ENV_SETTINGS = "`fab init` writes a production settings module that does this"
PROXY_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Where gangway's nginx site serves the static files and the uploads (templates/nginx/site.conf.j2 is
# rendered with these): the only URLs those files answer at.
STATIC_LOCATION = "/static/"
MEDIA_LOCATION = "/media/"
CONFIG_SET = "`fab config --set NAME=value`"
# How a release check that stops on blocking findings begins its message (one "- finding" line follows each).
NOT_READY = "the settings are not ready for production"


@dataclass(frozen=True)
class Finding:
    text: str
    blocking: bool = False


def server_findings(facts: dict) -> list[Finding]:
    """What a release's settings, read on the server with the real environment, would get wrong."""
    return settings_findings(facts) + versions(compat.parse_version(facts["django"]),
                                                compat.python_version(facts["python"]))


def local_findings(facts: dict | None, requirements: str | None, requirements_name: str,
                   python: tuple[int, int] = compat.DEFAULT_SERVER_PYTHON, scanned: bool = False) -> list[Finding]:
    """What `fab init` finds: the settings (when they could be imported here) and the requirements file, read
    for the Pythons of the Debian releases gangway sets up (`python`: the one a suggested pin is for). A missing
    requirements file is `None`. `scanned`: the caller shows what the project's code uses of what Django
    removed, so a Django that must move up gets no list of what usually breaks."""
    found = settings_findings(facts, drivers=False) if facts else []
    if requirements is None:
        found.append(Finding(f"there is no {requirements_name}: the server builds the app's Python environment "
                             f"from it, so list your packages there (Django, the PostgreSQL driver, Gunicorn and "
                             "whatever else your code imports; `pip freeze` shows what is installed)",
                             blocking=True))
        return found
    pinned = compat.django_requirement(requirements)
    if pinned is None:
        found.append(Finding(f"{requirements_name} does not name Django: the server installs only what it lists, "
                             f"so add a line such as {_suggested_pin(None, python)}"))
    elif pinned[1] is None:
        found.append(Finding(f"{requirements_name} names Django without a version ({pinned[0]}): every deploy "
                             "would install whatever is newest that day, so pin the series you test with, e.g. "
                             f"{_suggested_pin(compat.parse_version(facts['django']) if facts else None, python)}"))
    else:
        found += local_versions(pinned[1], requirements_name, usual=not scanned)
    if not compat.names_postgres_driver(requirements):  # the server's database is PostgreSQL, always
        version = (pinned and pinned[1]) or (compat.parse_version(facts["django"]) if facts else None) or (4, 2)
        found.append(Finding(f"{requirements_name} names no PostgreSQL driver: Django cannot reach the server's "
                             f"PostgreSQL without one, so add {compat.postgres_driver(version)}", blocking=True))
    return found


def settings_findings(facts: dict, drivers: bool = True) -> list[Finding]:
    """The settings' own problems; `drivers`: whether the installed PostgreSQL drivers are known (on the
    server they are the release's; here they would be this machine's, which says nothing)."""
    env = facts["environment"]
    found = []
    names = _split(env["DJANGO_ALLOWED_HOSTS"])
    if facts["debug"]:
        found.append(_debug_on(facts["debug_source"]))
    found += _secret_key(facts["secret_key"])
    found += _hosts(facts["allowed_hosts"], names)
    found += _database(facts["database"], env, facts["drivers"] if drivers else None)
    found += _static(facts["static_root"], facts["directory"], facts["settings_module"])
    found += _static_url(facts["static_url"], names)
    found += _media(facts["media_root"], env["DJANGO_MEDIA_ROOT"])
    found += _media_url(facts["media_url"], names, facts["uploads"])
    if env["DJANGO_HTTPS"] == "1":
        found += _https(facts, names)
    return found


DEBUG_HARM = "error pages would show your code, settings and data to any visitor"


def _debug_on(source: dict | None) -> Finding:
    if not source:
        return Finding(f"DEBUG is on in production: {DEBUG_HARM}, so set DEBUG = False for production "
                       f"({ENV_SETTINGS})", blocking=True)
    names = [variable["name"] for variable in source["variables"]]
    given = [variable["name"] for variable in source["variables"] if variable["set"]]
    how = ("which the app's environment sets so that DEBUG is on" if given else
           f"which the server does not set, and without {'it' if len(names) == 1 else 'them'} DEBUG is on")
    return Finding(f"DEBUG is on in production: your settings read it from the environment variable "
                   f"{_or(names)}, {how}, so {DEBUG_HARM}; turn it off with {_debug_fix(source)} (the app's "
                   f"variables on the server are set with {CONFIG_SET}), or set DEBUG = False for production "
                   f"({ENV_SETTINGS})", blocking=True)


def _debug_fix(source: dict) -> str:
    """The `fab config` command that turns DEBUG off: with the value the settings were seen to take for off."""
    off = source.get("off")
    if not off:
        return f"`fab config --set {source['variables'][0]['name']}=VALUE` (the value your settings take for off)"
    name, value = off
    if value is None:
        return f"`fab config --unset {name}` (and by taking it out of app.env in the inventory)"
    return f"`fab config --set {name}={value}`"


def debug_note(facts: dict | None) -> str | None:
    """For `fab init`, when DEBUG is read from the environment and is off with what the server sets: which
    variable keeps it so, and how the app's variables are set there (init cannot see what `fab config` set,
    only the inventory's app.env). None: DEBUG is on (a finding says so) or not read from the environment."""
    source = (facts or {}).get("debug_source")
    if not source or facts["debug"]:
        return None
    names = [variable["name"] for variable in source["variables"]]
    given = [variable["name"] for variable in source["variables"] if variable["set"]]
    state = ("which app.env in the inventory sets so that DEBUG is off" if given else
             "which the server does not set, so DEBUG is off there")
    off = source.get("off")
    keep = (f"pin it off with `fab config --set {off[0]}={off[1]}`" if off and off[1] is not None else
            f"leave {off[0]} unset there" if off else
            f"give {names[0]} there only the value your settings take for off")
    return (f"your settings read DEBUG from the environment variable {_or(names)}, {state}; the app's "
            f"variables on the server are set with {CONFIG_SET}: {keep}, and never set it to turn DEBUG on in "
            "production")


def _or(names: list[str]) -> str:
    return " or ".join(names)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _secret_key(kind: str) -> list[Finding]:
    fix = ("read it from the environment with SECRET_KEY = os.environ['DJANGO_SECRET_KEY'] (gangway generates "
           "one on the server; " + ENV_SETTINGS + ")")
    if kind == "insecure":
        return [Finding("SECRET_KEY is Django's 'django-insecure-' development key written in your settings: "
                        "anyone who has seen the code can forge sessions and password-reset links, so " + fix)]
    if kind == "code":
        return [Finding("SECRET_KEY is written in your settings instead of read from the server's environment: "
                        "anyone who has seen the code can forge sessions and password-reset links, so " + fix)]
    if kind == "missing":
        return [Finding("SECRET_KEY is empty: Django refuses to start without one, so " + fix, blocking=True)]
    return []


def host_allowed(host: str, patterns: list[str]) -> bool:
    """Django's own rule (django.http.request.validate_host): '*', '.example.com' (the domain and its
    subdomains), or the exact name, ignoring case."""
    host = host.lower().rstrip(".")
    for pattern in (p.lower() for p in patterns):
        if pattern == "*" or host == pattern.rstrip(".") or (
                pattern.startswith(".") and (host.endswith(pattern) or host == pattern[1:])):
            return True
    return False


def _hosts(allowed: list[str], names: list[str]) -> list[Finding]:
    missing = [name for name in names if not host_allowed(name, allowed)]
    if not missing:
        return []
    listed = f"ALLOWED_HOSTS is {allowed!r}" if allowed else "ALLOWED_HOSTS is empty"
    return [Finding(f"{listed}, which does not cover {', '.join(missing)}: Django answers 400 Bad Request to "
                    "every request for a name it does not list, so read the list gangway sets with "
                    "ALLOWED_HOSTS = os.environ['DJANGO_ALLOWED_HOSTS'].split(',') (" + ENV_SETTINGS + ")",
                    blocking=True)]


def _database(database: dict, env: dict, drivers: list[str] | None) -> list[Finding]:
    engine, name = database["engine"], database["name"]
    if "sqlite3" in engine:
        return [Finding(f"the database is SQLite ({name}): on the server the release's directory is read-only "
                        "and replaced at every deploy, so the app could not write and would lose its data; "
                        "gangway gives it PostgreSQL, so read DATABASE_URL (or DJANGO_DB_NAME) in the "
                        f"production settings ({ENV_SETTINGS}), and `fab import-data` moves your SQLite "
                        "content over", blocking=True)]
    if "postgresql" not in engine and "postgis" not in engine:
        return [Finding(f"the database engine is {engine or 'not set'}: gangway sets up PostgreSQL only, so "
                        "the app would find no database; use django.db.backends.postgresql with DATABASE_URL "
                        f"(postgres:///{env['DJANGO_DB_NAME'] or 'APP'}) from the environment", blocking=True)]
    found = []
    if drivers == []:
        found.append(Finding("no PostgreSQL driver is installed in the release: Django cannot reach the "
                             "database without one, so add psycopg[binary] (Django 4.2 and later) or "
                             "psycopg2-binary to the requirements file", blocking=True))
    if env["DJANGO_DB_NAME"] and name != env["DJANGO_DB_NAME"] and not database["host"]:
        found.append(Finding(f"DATABASES['default'] names the database {name!r}, not the server's "
                             f"{env['DJANGO_DB_NAME']!r}: your settings ignore the environment, so the app would "
                             f"look for a database that does not exist; read DATABASE_URL ({env['DATABASE_URL']}) "
                             "or DJANGO_DB_NAME from the environment"))
    return found


STATIC_FIX = "STATIC_ROOT = os.environ.get('DJANGO_STATIC_ROOT', BASE_DIR / 'staticfiles')"


def _static(root: str, directory: str, settings_module: str = "") -> list[Finding]:
    directory = directory.rstrip("/")
    code = "/".join([directory] + settings_module.split(".")[:-1])  # the settings' package: code lives there
    if not root:
        return [Finding("STATIC_ROOT is not set: collectstatic needs a directory to gather the CSS, JS and images "
                        f"that nginx serves, so set {STATIC_FIX} (" + ENV_SETTINGS + ")", blocking=True)]
    if not (root + "/").startswith(directory.rstrip("/") + "/"):
        return [Finding(f"STATIC_ROOT is {root}, outside the project: nginx serves each release's static files "
                        "from the release itself, so every CSS and JS file would answer 404; read the directory "
                        f"gangway sets with {STATIC_FIX} (" + ENV_SETTINGS + ")", blocking=True)]
    if root == directory or (code + "/").startswith(root.rstrip("/") + "/"):
        return [Finding(f"STATIC_ROOT is {root}, which holds your code: collectstatic would mix the static files "
                        "into it and nginx would publish that directory, settings included, to any visitor, so "
                        f"give the static files a directory of their own with {STATIC_FIX} ({ENV_SETTINGS})",
                        blocking=True)]
    return []


def served_path(url: str, names: list[str]) -> str | None:
    """The path at which this site serves a STATIC_URL or MEDIA_URL, as Django builds links with it (a relative
    one is put under the script prefix, /); None when it names another site (a CDN, a storage bucket)."""
    parts = urlsplit(url)
    if parts.netloc and not any(host_allowed(parts.hostname or "", [name]) for name in names):
        return None
    return parts.path if parts.path.startswith("/") else "/" + parts.path


def _static_url(url: str, names: list[str]) -> list[Finding]:
    path = served_path(url, names)
    if path is None or path == STATIC_LOCATION:
        return []
    what = f"STATIC_URL is {url!r}" if url.strip("/") else "STATIC_URL is not set"
    return [Finding(f"{what}, but nginx serves the static files at {STATIC_LOCATION}: every page's CSS, JS and "
                    f"images would answer 404, so set STATIC_URL = '{STATIC_LOCATION}' for production "
                    f"({ENV_SETTINGS})", blocking=True)]


def _media_url(url: str, names: list[str], uploads: list[str] | None) -> list[Finding]:
    """Blocking when the models take uploads; said as advice when they are not known to (files may still be
    saved through the storage), and nothing for Django's default (unset) when no model takes uploads."""
    path = served_path(url, names)
    if path is None or path == MEDIA_LOCATION or (not url.strip("/") and not uploads):
        return []
    what = f"MEDIA_URL is {url!r}" if url.strip("/") else "MEDIA_URL is not set"
    if uploads:
        shown = ", ".join(uploads[:3]) + (", ..." if len(uploads) > 3 else "")
        return [Finding(f"{what}, but nginx serves uploaded files at {MEDIA_LOCATION}: every file your models "
                        f"take ({shown}) would answer 404, so set MEDIA_URL = '{MEDIA_LOCATION}' for "
                        f"production ({ENV_SETTINGS})", blocking=True)]
    return [Finding(f"{what}, but nginx serves uploaded files at {MEDIA_LOCATION}: any file your app stores "
                    f"would answer 404, so if it takes uploads set MEDIA_URL = '{MEDIA_LOCATION}' for production "
                    f"({ENV_SETTINGS})")]


def _media(root: str, served: str) -> list[Finding]:
    fix = (f"read it from the environment with MEDIA_ROOT = os.environ.get('DJANGO_MEDIA_ROOT', BASE_DIR / "
           f"'media') ({ENV_SETTINGS})")
    if not root:
        return [Finding(f"MEDIA_ROOT is not set: uploaded files would go to the release's directory, which is "
                        f"read-only on the server and replaced at every deploy, while nginx serves /media/ from "
                        f"{served}; if your app takes uploads, {fix}")]
    if served and root != served.rstrip("/"):
        return [Finding(f"MEDIA_ROOT is {root}, not {served}: nginx serves /media/ from {served}, the only "
                        f"place the app may write, so uploads would fail and files would answer 404; {fix}",
                        blocking=True)]
    return []


def _https(facts: dict, names: list[str]) -> list[Finding]:
    found = []
    behind_proxy = tuple(facts["proxy_ssl_header"]) == PROXY_HEADER
    if not behind_proxy:
        found.append(Finding("SECURE_PROXY_SSL_HEADER is not set: nginx ends HTTPS and passes requests on over a "
                             "local socket, so Django takes every request for plain HTTP (links it builds say "
                             "http://, SECURE_SSL_REDIRECT would loop); set SECURE_PROXY_SSL_HEADER = "
                             "('HTTP_X_FORWARDED_PROTO', 'https'), the header nginx sets here"))
    insecure = [name for name in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE") if not facts[name.lower()]]
    if insecure:
        found.append(Finding(f"{' and '.join(insecure)} {'is' if len(insecure) == 1 else 'are'} off: the login "
                             "and form cookies would also travel over plain HTTP, where anyone on the network can "
                             f"read them; set {' and '.join(n + ' = True' for n in insecure)} for HTTPS"))
    if compat.parse_version(facts["django"]) >= (4, 0):
        origins = facts["csrf_trusted_origins"]
        bare = [origin for origin in origins if "://" not in origin]
        if bare:
            found.append(Finding(f"CSRF_TRUSTED_ORIGINS has entries without a scheme ({', '.join(bare)}): since "
                                 "Django 4.0 each one is a full origin, so write them like 'https://example.com'"))
        elif not behind_proxy and (missing := [n for n in names if f"https://{n}" not in origins]):
            found.append(Finding(f"forms sent from {', '.join('https://' + n for n in missing)} would be refused "
                                 "with 403 (CSRF verification failed): since Django 4.0 the Origin header must "
                                 "match the request's scheme, which Django sees as http behind nginx; set "
                                 "SECURE_PROXY_SSL_HEADER as above, or list them in CSRF_TRUSTED_ORIGINS"))
    return found


def _moving_up(version: str, breaks: list[str], pin: str) -> str:
    """What usually needs changing on the way up from Django `version` to `pin`, as a clause ("" for nothing)."""
    if not breaks:
        return ""
    return (f"; moving up from {version}, these usually need changing: {'; '.join(breaks)}; run the project "
            f"on the new Django locally first (`python -m pip install '{pin}'`, `python manage.py check`)")


def versions(django: tuple[int, ...] | None, python: tuple[int, int] | None,
             requirements_name: str = "the requirements file") -> list[Finding]:
    """A Django that does not run on the server's Python: which versions can, and what usually breaks."""
    if django is None or python is None or compat.runs_on(django, python) is not False:
        return []
    version = ".".join(str(n) for n in django)
    target = compat.nearest_lts(python, django)
    breaks = compat.breaks_between(django, target.version)
    changes = _moving_up(version, breaks, compat.requirement(target, python))
    return [Finding(f"Django {version} does not run on the server's {compat.python_name(python)}, so pip or "
                    f"its first import would fail there: {compat.runs_on_names(python)} run on it, so pin e.g. "
                    f"{compat.requirement(target, python)} in {requirements_name}{changes}")]


def local_versions(django: tuple[int, ...] | None, requirements_name: str, usual: bool = True) -> list[Finding]:
    """Before the server is known: whether this Django runs on the Python of each Debian release gangway sets
    up. Said plainly when it runs on none, and only as a condition ("if the server is Debian 13") when it runs
    on some: which one the server is, nothing here has seen."""
    releases = compat.debian_releases(django) if django else None
    if not releases or not releases[1]:
        return []
    runs, fails = releases
    version = ".".join(str(n) for n in django)
    everywhere = tuple(compat.DEBIAN_PYTHON.values())
    target = compat.nearest_lts_on(everywhere, django)
    pin = compat.requirement_on(target, everywhere)
    breaks = compat.breaks_between(django, target.version)
    changes = _moving_up(version, breaks, pin) if usual else ""
    if not runs:
        return [Finding(f"Django {version} runs neither on {' nor on '.join(map(compat.debian_name, fails))}, "
                        "the Debian releases gangway sets up, so pip or its first import would fail on the "
                        f"server: pin e.g. {pin} in {requirements_name} ({target.name} LTS runs on both)"
                        f"{changes}")]
    failing = fails[0]
    python = compat.DEBIAN_PYTHON[failing]
    return [Finding(f"if the server is {compat.debian_name(failing)}, Django {version} does not run there, so "
                    f"pip or its first import would fail ({compat.runs_on_names(python)} run on it); on "
                    f"{' and '.join(map(compat.debian_name, runs))} it runs. For a server of either release, pin "
                    f"e.g. {pin} in {requirements_name} ({target.name} LTS runs on both){changes}")]


def _suggested_pin(django: tuple[int, ...] | None, python: tuple[int, int]) -> str:
    return compat.requirement(pick_series(django, python), python)


def pick_series(django: tuple[int, ...] | None, python: tuple[int, int]) -> compat.Series:
    """The Django series for a new requirements file: the project's own when it runs on the server's Python,
    else the nearest LTS that does."""
    if django and compat.runs_on(django[:2] + (99,), python):
        known = compat.series(django)
        if known:
            return known
    return compat.nearest_lts(python, django or (0, 0))
