"""`fab init`: make a Django project ready for gangway, from inside it.

It finds what it can (manage.py, the settings module, the WSGI module, the Django version), asks on a terminal
only for what it cannot (the server, the domains, an e-mail for the certificate authority; each also a flag),
writes the two-line fabfile and a commented inventory in deploy/, and runs the readiness check. The fixes it
offers (a production settings module, a requirements file) are shown as a diff first and written only with
consent: --yes, or a yes on the terminal.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..project import compat, django as projects, readiness
from .. import defaults, inventory as inv
from ..project.django import Project
from ..commands.render import TEMPLATES, render
from ..commands.services import REDIS

INVENTORY_FILE = "deploy/production.yaml"


class InitError(Exception):
    """A value init cannot use; the message names it and the fix."""


@dataclass
class Answers:
    """What the operator gave as flags (or typed); None: not given."""
    host: str | None = None
    user: str | None = None
    key: str | None = None
    domains: tuple[str, ...] = ()
    email: str | None = None
    name: str | None = None


@dataclass
class Console:
    """Where init talks: `ask` is None without a terminal (then only the flags count)."""
    say: Callable[[str], None] = print
    ask: Callable[[str], str] | None = None


@dataclass
class Change:
    """A file init would write: its path relative to the project, and its old and new text."""
    path: str
    new: str
    old: str | None = None

    def diff(self) -> str:
        old = (self.old or "").splitlines(keepends=True)
        lines = difflib.unified_diff(old, self.new.splitlines(keepends=True),
                                     "/dev/null" if self.old is None else f"a/{self.path}", f"b/{self.path}")
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass
class Outcome:
    blocking: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    declined: bool = False  # fixes were offered and not written


# --- the questions ---------------------------------------------------------------------------------------------

CHECKS = {"host": inv.check_address, "user": inv.check_unix_user, "key": inv.check_local_path,
          "email": inv.check_email, "name": inv.check_app_name}


def validate(answers: Answers) -> None:
    """Every flag through the inventory's own checks: they end up in YAML, in commands and on the server."""
    for flag, check in CHECKS.items():
        value = getattr(answers, flag)
        if value is not None and (problem := check(value)):
            raise InitError(f"--{flag} {value!r} {problem}")
    for domain in answers.domains:
        if problem := inv.check_domain(domain):
            raise InitError(f"--domain {domain!r} {problem}")


def app_name(package: str, directory: Path) -> str:
    """A usable app name from the settings package (or the directory): lower case, _ for anything else."""
    raw = (package.split(".")[0] or directory.name).lower()
    name = re.sub(r"[^a-z0-9_]", "_", raw).lstrip("_0123456789")[:26] or "app"
    return f"{name[:22]}_app" if inv.check_app_name(name) else name


def _asked(console: Console, question: str, check: Callable[[str], str | None] | None) -> str:
    """Ask until the answer passes `check` (empty is allowed: it means none)."""
    while True:
        answer = console.ask(question).strip()
        problem = check(answer) if answer and check else None
        if not problem:
            return answer
        console.say(f"  {answer!r} {problem}")


def complete(answers: Answers, found_name: str, console: Console) -> Answers:
    """The answers, with what is still missing asked on a terminal (without one, flags only)."""
    name = answers.name or found_name
    host, domains, email = answers.host, answers.domains, answers.email
    if console.ask:
        if not host:
            host = _asked(console, "The server's IP address or host name (empty: fill it in later): ",
                          inv.check_address) or None
        if not domains:
            typed = _asked(console, "The site's domain names, separated by commas (empty: plain HTTP at the "
                                    "server's address): ", _domains_problem)
            domains = tuple(d.strip().lower() for d in typed.split(",") if d.strip())
        if domains and not email:
            email = _asked(console, "An e-mail address for certificate expiry notices (empty: none): ",
                           inv.check_email) or None
    return Answers(host=host, user=answers.user, key=answers.key, domains=domains, email=email, name=name)


def _domains_problem(typed: str) -> str | None:
    for domain in (d.strip() for d in typed.split(",") if d.strip()):
        if problem := inv.check_domain(domain):
            return f"({domain}) {problem}"
    return None


# --- the files -------------------------------------------------------------------------------------------------

def inventory_text(answers: Answers, found: Project, facts: dict | None, asgi: Asgi | None = None,
                   redis_users: list[str] | tuple[str, ...] = ()) -> str:
    def quoted(value: str) -> str:  # a YAML double-quoted string (JSON's syntax is YAML's)
        return json.dumps(value, ensure_ascii=False)

    wsgi = wsgi_module(found, facts)
    health = health_check(facts)
    path = health["path"] if health else ""
    return render("init/production.yaml.j2", app=answers.name, domains=answers.domains,
                  wsgi_module=wsgi if wsgi != f"{answers.name}.wsgi" else "", health=health,
                  health_path=path if re.fullmatch(r"[A-Za-z0-9/._~-]*", path) else quoted(path),
                  production_module=found.production_module,
                  address=quoted(answers.host) if answers.host else "", user=answers.user or "root",
                  key=quoted(answers.key) if answers.key else "",
                  email=quoted(answers.email) if answers.email else "", asgi=asgi,
                  asgi_module=asgi.module if asgi and asgi.module != f"{answers.name}.asgi" else "",
                  redis_users=", ".join(redis_users))


def wsgi_module(found: Project, facts: dict | None) -> str:
    """The module Gunicorn loads: the one the WSGI_APPLICATION setting names when the settings could be read
    here, else the wsgi.py beside the settings; '' when neither is known."""
    module = ((facts or {}).get("wsgi_application") or "").rpartition(".")[0]
    return module if module and not inv.check_python_module(module) else found.wsgi_module


@dataclass(frozen=True)
class Asgi:
    """What says the project serves ASGI: the module to load, why, and the channel layers that need Redis."""
    module: str
    why: str
    redis_layers: tuple[str, ...] = ()


_NAMES_CHANNELS = re.compile(r"(?im)^\s*channels(?![A-Za-z0-9._-]*[A-Za-z0-9])")
_ASGI_SETTING = re.compile(r"""(?m)^ASGI_APPLICATION\s*=\s*['"]([A-Za-z0-9_.]+)['"]""")


def asgi_server(found: Project, facts: dict | None, requirements: str | None) -> Asgi | None:
    """The ASGI application the project is written for, when its settings name one (ASGI_APPLICATION) or it
    uses Channels (in INSTALLED_APPS or its requirements); None: a WSGI project. A startproject's asgi.py
    alone says nothing: every project has one. Without settings read here, their text is searched."""
    if facts is not None:
        application, channels = facts.get("asgi_application") or "", bool(facts.get("channels"))
        layers = facts.get("channel_layers") or []
    else:
        try:
            match = _ASGI_SETTING.search(found.settings_file.read_text(errors="replace"))
        except OSError:
            match = None
        application, channels, layers = match[1] if match else "", False, []
    required = bool(_NAMES_CHANNELS.search(requirements or ""))
    if not (application or channels or required):
        return None
    named = bool(application) and not inv.check_python_module(application)  # shown in YAML and on the terminal
    reasons = []
    if application:
        reasons.append("your settings set ASGI_APPLICATION" + (f" = {application}" if named else ""))
    if channels or required:
        reasons.append("Channels is in INSTALLED_APPS" if channels else "your requirements name channels")
    module = application.rpartition(".")[0] if named else ""
    if not module:
        module = f"{found.package}.asgi" if found.package else "asgi"
    return Asgi(module, " and ".join(reasons),
                tuple(layer for layer in layers if "redis" in layer.lower() and layer.isprintable()))


def health_check(facts: dict | None) -> dict | None:
    """What the settings' URLs say about the health check path: None when unknown (settings or URLs not read
    here), else whether / has a page and the path to check ('' when no page without parameters was found)."""
    health = (facts or {}).get("health")
    if health and health["path"] and inv.check_url_path(health["path"]):
        return {**health, "path": "", "redirect": ""}  # not a path the inventory takes: as if none was found
    return health


def with_settings_module(text: str, module: str) -> str:
    """The inventory's text with app.settings_module set to `module`, comments and order kept."""
    for pattern in (r"(?m)^(?P<indent>[ \t]+)#[ \t]*settings_module:.*$",
                    r"(?m)^(?P<indent>[ \t]+)settings_module:.*$"):
        match = re.search(pattern, text)
        if match:
            return text[:match.start()] + f"{match['indent']}settings_module: {module}" + text[match.end():]
    match = re.search(r"(?m)^(?P<indent>[ \t]+)name:.*$", text)
    if not match:
        raise InitError(f"{INVENTORY_FILE} has no app.name line to put app.settings_module beside; add "
                        f"`settings_module: {module}` under app: yourself")
    return text[:match.end()] + f"\n{match['indent']}settings_module: {module}" + text[match.end():]


def production_settings(found: Project) -> str:
    leaf = found.settings_module.rpartition(".")[2]
    return render("init/settings_production.py.j2", settings_file=f"{leaf}.py",
                  settings_import=f".{leaf}" if found.package else leaf)


def requirements_text(django: str, python: tuple[int, int]) -> str:
    version = compat.parse_version(django) if django else None
    chosen = readiness.pick_series(version, python)
    pin = (f"Django>={django},<{chosen.version[0]}.{chosen.version[1] + 1}"
           if version and chosen == compat.series(version) and compat.runs_on(version, python)
           else compat.requirement(chosen, python))
    return render("init/requirements.txt.j2", django=pin, driver=compat.postgres_driver(chosen.version),
                  gunicorn=defaults.GUNICORN)


def project_django(found: Project, requirements: str | None, requirements_name: str,
                   installed: str) -> tuple[tuple[int, ...], str] | None:
    """The Django the project is written for, and how that is known: the requirements' pin, else the version
    startproject wrote at the top of the settings, else the one installed here. None: nothing says."""
    pinned = compat.django_requirement(requirements or "")
    if pinned and pinned[1]:
        return pinned[1], f"{requirements_name} pins it"
    made = found.startproject_version()
    if made:
        return made, "startproject made your settings with it"
    version = compat.parse_version(installed) if installed else None
    return (version, "installed here") if version else None


def _version(version: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


def _pin_note(made: tuple[tuple[int, ...], str] | None, pinned: tuple[str, tuple[int, ...] | None] | None,
              requirements_name: str) -> str:
    """Why the requirements file init writes pins the Django it pins."""
    if not made or not pinned or not pinned[1]:
        return ""
    (version, source), pin, python = made, pinned[0], compat.DEFAULT_SERVER_PYTHON
    on = compat.python_name(python)
    if compat.series(version) == compat.series(pinned[1]):
        return (f"  Django    {requirements_name} pins {pin}: your project's Django {_version(version)} ({source}), "
                f"which runs on {on}")
    releases = compat.debian_releases(version)
    chosen = compat.series(pinned[1])
    if releases and releases[0]:  # it runs on the other release's Python
        other = releases[0][0]
        why = (f"Django {_version(version)} does not run on {on}; if your server is {compat.debian_name(other)}, "
               f"where it runs, you may pin {compat.requirement(compat.series(version), compat.DEBIAN_PYTHON[other])} "
               "instead")
    elif releases:
        why = (f"Django {_version(version)} runs neither on {' nor on '.join(map(compat.debian_name, releases[1]))}, "
               "the Debian releases gangway sets up")
    else:
        why = f"this table of Django releases does not know {_version(version)}"
    return (f"  Django    {requirements_name} pins {pin} ({chosen.name}{' LTS' if chosen.lts else ''}), not your "
            f"project's Django {_version(version)} ({source}): {why}")


def _django_target(made: tuple[tuple[int, ...], str] | None, requirements: str | None) -> tuple[int, ...] | None:
    """The Django the server will run: the requirements' pin when it runs on the server's Python, else the one
    init suggests (and writes, when there is no requirements file)."""
    pinned = compat.django_requirement(requirements or "")
    python = compat.DEFAULT_SERVER_PYTHON
    if pinned and pinned[1] and compat.runs_on(pinned[1], python):
        return pinned[1]
    base = (pinned[1] if pinned and pinned[1] else None) or (made[0] if made else None)
    return readiness.pick_series(base, python).version if base else None


def _shown_path(path: str) -> str:
    return path if re.fullmatch(r"[A-Za-z0-9_./-]+", path) else repr(path)


def _removed_uses(found: Project, made: tuple[tuple[int, ...], str] | None, requirements: str | None,
                  say: Callable[[str], None]) -> list[str]:
    """What the project's code uses of what Django removed before the version the server will run (read, not
    run: compat.BREAKS, the same knowledge the deploy's failure hints use); each use is a problem to fix."""
    target = _django_target(made, requirements)
    if target is None:
        return []
    uses = found.removed_uses(target)
    new = _version(target[:2])
    old = _version(made[0]) if made else ""
    moving = bool(made) and tuple(made[0][:2]) < tuple(target[:2])
    if not uses:
        if moving:
            say(f"  Django    moving from {old} to {new}: your code uses none of what Django removed in between "
                "(imports, model fields, settings, template tags were read); run your tests on the new Django")
        return []
    problems = [f"{_shown_path(path)}:{use.line} {use.what}: {use.change.hint}" for path, use in uses]
    say((f"Django {old} -> {new}: your code uses {len(uses)} thing(s) Django removed on the way; "
         if moving else f"Django {new}: your code uses {len(uses)} thing(s) it no longer has; ")
        + "each would fail on the server until it is changed:")
    for problem in problems:
        say(f"  - {problem}")
    return problems


# --- the run -------------------------------------------------------------------------------------------------

def run(directory: Path, answers: Answers, yes: bool, console: Console) -> Outcome:
    """Everything `fab init` does; the outcome lists the blocking problems left and the files written."""
    validate(answers)
    found = projects.find(directory)
    say, outcome = console.say, Outcome()

    inventory_path = found.directory / INVENTORY_FILE
    current = inv.load(str(inventory_path)) if inventory_path.is_file() else None
    if current:
        answers = Answers(host=current.hosts[0].address if current.hosts else None, domains=current.app.domains,
                          name=current.app.name)
    else:
        answers = complete(answers, app_name(found.package, found.directory), console)
    # The settings are read with the environment the server gives the app, and of this shell's only what Python
    # needs (no DEBUG=1 or DATABASE_URL of the laptop's), so what is judged here is what the server will see.
    app = current.app if current else inv.App(name=answers.name, domains=answers.domains)
    first_requirements = projects.read_requirements(found.directory / app.requirements) or ""
    # Celery, RQ, django-redis, Channels' Redis layer: their settings read the URLs `services: [redis]` gives.
    redis_users = compat.redis_clients(first_requirements)
    services = current.services if current else ((REDIS,) if redis_users else ())
    environment = projects.server_environment(app, answers.host or "", found.directory, services)
    settings_module = app.settings_module or found.settings_module
    local = projects.local_facts(found, settings_module, environment)
    wsgi = current.app.wsgi if current else wsgi_module(found, local.facts)
    say(f"Django project in {found.directory}: settings {found.settings_module}"
        + (f", WSGI {wsgi}" if wsgi else ""))

    asgi = asgi_server(found, local.facts, first_requirements)
    if current:
        say(f"  kept      {INVENTORY_FILE} (it exists)")
        if asgi and current.app.server != "asgi":
            say(f"  note      {asgi.why}, but {INVENTORY_FILE} serves WSGI: set app.server: asgi there (and "
                f"app.asgi_module: {asgi.module}) for async views and websockets")
    else:
        text = inventory_text(answers, found, local.facts, asgi, redis_users)
        inv.parse(yaml.safe_load(text), INVENTORY_FILE, inventory_path.parent)  # what is written must load
        _write(found.directory, INVENTORY_FILE, text)
        outcome.written.append(INVENTORY_FILE)
        say(f"  wrote     {INVENTORY_FILE}")
        current = inv.load(str(inventory_path))
        if not wsgi:
            say(f"  note      no wsgi.py was found beside the settings and WSGI_APPLICATION could not be read "
                f"here, so Gunicorn will load {current.app.wsgi}; set app.wsgi_module in {INVENTORY_FILE} if "
                "your WSGI module is another")
        if asgi:
            say(f"  server    asgi: {asgi.why}, so Gunicorn runs {current.app.asgi} with Uvicorn's workers "
                "(app.server), and nginx passes websockets to it")
    if redis_users and REDIS in current.services:
        say(f"  redis     your requirements name {', '.join(redis_users)}: `services: [redis]` in {INVENTORY_FILE} "
            "makes provision set up a Redis server on the server, and the app reads its address in REDIS_URL"
            + (" and Celery's queue in CELERY_BROKER_URL" if "celery" in redis_users else ""))
    elif redis_users:
        say(f"  note      your requirements name {', '.join(redis_users)}, which need a Redis server: add "
            f"`services: [redis]` to {INVENTORY_FILE} and read REDIS_URL (CELERY_BROKER_URL for Celery)")
    if asgi and asgi.redis_layers:
        say(f"  redis     your CHANNEL_LAYERS use Redis ({', '.join(asgi.redis_layers)}): `services: [redis]` in "
            f"{INVENTORY_FILE} makes provision set up a Redis server, and the app gets its address in REDIS_URL: "
            "read that in the layer's CONFIG hosts")
    _health_note(health_check(local.facts), current.app.health_check, say)
    _fabfile(found, outcome, say)

    requirements_name = current.app.requirements
    requirements = projects.read_requirements(found.directory / requirements_name)

    changes = []
    # Offered only for settings seen to need it; a project whose inventory names its own settings module
    # keeps it (the findings say what to change), and settings that cannot be imported here are checked on
    # the server.
    if not current.app.settings_module and local.facts and readiness.settings_findings(local.facts,
                                                                                       drivers=False):
        if not found.production_file.is_file():
            changes.append(Change(_relative(found, found.production_file), production_settings(found)))
        old = inventory_path.read_text()
        changes.append(Change(INVENTORY_FILE, with_settings_module(old, found.production_module), old))
    made = project_django(found, requirements, requirements_name, local.django)
    pin_note = ""
    if requirements is None:
        written = requirements_text(".".join(map(str, made[0])) if made else "", compat.DEFAULT_SERVER_PYTHON)
        changes.append(Change(requirements_name, written))
        pin_note = _pin_note(made, compat.django_requirement(written), requirements_name)

    outcome.declined = bool(changes) and not _consent(changes, yes, console, pin_note)
    if changes and not outcome.declined:
        for change in changes:
            _write(found.directory, change.path, change.new)
            if change.path not in outcome.written:
                outcome.written.append(change.path)
            say(f"  wrote     {change.path}")
        current = inv.load(str(inventory_path))
        settings_module = current.app.settings_module or found.settings_module
        local = projects.local_facts(found, settings_module, environment)
        requirements = projects.read_requirements(found.directory / requirements_name)
    elif not changes and not outcome.written:
        say("  nothing to change: the fabfile, the inventory and the fixes are in place")

    if local.facts is None:
        say(f"  note      {settings_module} could not be imported here ({local.error}), so only the "
            "requirements were checked; the server checks the settings at every deploy")
    else:
        say(f"  read      {settings_module} here (Django {local.django}), with the environment the server gives it")
        if note := readiness.debug_note(local.facts):  # DEBUG off here only because a variable is unset
            say(f"  debug     {note}")
    removed = _removed_uses(found, made, requirements, say)
    findings = readiness.local_findings(local.facts, requirements, requirements_name, scanned=True)
    _show_findings(findings, settings_module, say, code_problems=bool(removed))
    outcome.blocking = removed + [f.text for f in findings if f.blocking]
    _next_steps(found, current, local, outcome, say)
    return outcome


def _health_note(health: dict | None, path: str, say: Callable[[str], None]) -> None:
    """Say what the URLs (read with DEBUG off, as production runs them) tell about the inventory's health check
    `path` when / has no page of its own."""
    if not health or health["root"]:
        return
    redirect = health.get("redirect")
    where = (f"your URLs answer / with a redirect to {redirect} (a redirect is not a 2xx)" if redirect else
             "your URLs have no page at /")
    if path == health["path"]:
        say(f"  health    {where}, so the health check (app.health_check) asks for {path}"
            + ("" if redirect else ", the first page without parameters in them")
            + ": a new release must answer it with 200 to get traffic")
    elif path == "/":
        say(f"  note      {where}, so a health check of / would answer "
            + ("with that redirect" if redirect else "404") + " and no release "
            "would get traffic: set app.health_check in " + INVENTORY_FILE + " to "
            + (f"{redirect} (where / leads)" if redirect else
               f"{health['path']} (the first page without parameters in your URLs)" if health["path"] else
               "a path that answers 200 without a login"))


def _relative(found: Project, path: Path) -> str:
    return path.relative_to(found.directory).as_posix()


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".gangway-new")
    temporary.write_text(text)
    temporary.replace(path)


def _fabfile(found: Project, outcome: Outcome, say: Callable[[str], None]) -> None:
    path = found.directory / "fabfile.py"
    text = (TEMPLATES / "init" / "fabfile.py").read_text()
    if not path.is_file():
        _write(found.directory, "fabfile.py", text)
        outcome.written.append("fabfile.py")
        say("  wrote     fabfile.py (it loads gangway's tasks: fab --list shows them)")
    elif "namespace_for" in path.read_text(errors="replace"):
        say("  kept      fabfile.py (it loads gangway's tasks)")
    else:
        say("  note      fabfile.py exists and does not load gangway's tasks: add these two lines to it:\n"
            + "".join(f"            {line}\n" for line in text.splitlines()).rstrip())


def _consent(changes: list[Change], yes: bool, console: Console, pin_note: str = "") -> bool:
    say = console.say
    say("Fixes (shown as a diff; your settings.py stays as it is, so runserver keeps working):")
    for change in changes:
        say(change.diff().rstrip("\n"))
    if pin_note:
        say(pin_note)
    if yes:
        return True
    if console.ask:
        return console.ask("Write these changes? [y/N] ").strip().lower() in ("y", "yes")
    say("  not written: there is no terminal to ask on, so nothing of these fixes was written; run again with "
        "--yes to write them")
    return False


def _show_findings(findings: list[readiness.Finding], settings_module: str, say: Callable[[str], None],
                   code_problems: bool = False) -> None:
    blocking = [f for f in findings if f.blocking]
    other = [f for f in findings if not f.blocking]
    if not findings:
        say(f"Readiness: {settings_module} is ready for production as far as can be seen from here"
            + (" (the code above is not)" if code_problems else ""))
        return
    if blocking:
        say(f"Readiness: {len(blocking)} problem(s) would stop a deploy ({settings_module}):")
        for finding in blocking:
            say(f"  - {finding.text}")
    if other:
        say(f"Readiness: {len(other)} thing(s) to improve:")
        for finding in other:
            say(f"  - {finding.text}")


def _next_steps(found: Project, current: inv.Inventory, local: projects.LocalFacts, outcome: Outcome,
                say: Callable[[str], None]) -> None:
    steps = []
    if outcome.blocking:
        steps.append("fix the problems above" + (" (`fab init --yes` writes the fixes shown)" if outcome.declined
                                                 else "") + ", then run `fab init` again")
    in_git = subprocess.run(["git", "-C", str(found.directory), "rev-parse"], capture_output=True).returncode == 0
    files = " ".join(dict.fromkeys(["fabfile.py", "deploy/"] + [path for path in outcome.written
                                                               if not path.startswith("deploy/")]))
    steps.append(("commit: " if in_git else "put the project in git and commit: git init && ")
                 + f"git add {files} && git commit -m 'Deploy with gangway'")
    if not current.hosts:
        steps.append(f"put your server's address in {INVENTORY_FILE} (hosts: - address: ...)")
    steps += ["fab provision      (sets up the server: once, and safe to repeat)",
              "fab deploy         (ships the committed code; run it after every commit you want live)"]
    database = (local.facts or {}).get("database", {})
    sqlite = found.sqlite_with_content(database.get("name", "") if "sqlite" in database.get("engine", "") else "")
    media = found.media_files()
    if sqlite or media:
        steps.append("fab import-data    (" + " and ".join(
            ([f"copies the content of {sqlite.name} into the server's PostgreSQL"] if sqlite else [])
            + ([f"offers to upload the {media} file(s) in media/"] if media else [])) + ")")
    say("Next:")
    for number, step in enumerate(steps, 1):
        say(f"  {number}. {step}")


