"""The tasks as one Fabric collection, configured for the project whose fabfile loads it.

A project's fabfile is two lines::

    from gangway.collection import namespace_for
    namespace = namespace_for(__file__)

Its inventory files then live in `deploy/` beside the fabfile (`deploy/production.yaml`), so the team versions
them with the code. This repository's own fabfile uses `inventory/`.

Each task here is its face: name, options, help, the checks of its arguments, and which steps of tasks/cli/ it
runs. Those steps (and the SSH, templates and YAML they need) are imported when the task runs, not when `fab`
loads the fabfile: `fab --list` and `fab --help TASK` then cost little more than `fab --version`
(tests/unit/test_collection.py keeps it so).
"""

from __future__ import annotations

import sys
from pathlib import Path

import fabric
from fabric import task
from invoke import Collection
from invoke.exceptions import Exit

from . import defaults

# Where a project keeps its inventory files, relative to its fabfile.
INVENTORY_DIR = "deploy"
# The --inventory option of every task, in `fab --help TASK`.
INVENTORY_HELP = ("inventory name (NAME.yaml in the project's deploy/, inventory/ in gangway's own repository) "
                  "or path; default: production")
# The -v option of every task that talks to a server.
VERBOSE_HELP = "print every remote command as it runs (or set gangway.verbose / FABRIC_GANGWAY_VERBOSE=1)"


class VerboseTask(fabric.Task):
    """A task whose `verbose` option is also -v (Fabric gives a task short flags for all options or none, and
    -i, -H, -S ... are its own)."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name == "verbose" and "v" not in taken_names:
            opts["names"] = [*opts["names"], "v"]
        return opts


# --- init -------------------------------------------------------------------------------------------------------

@task(auto_shortflags=False, iterable=["domain"], help={
    "project": "the Django project's directory (the one with manage.py); default: the current directory",
    "host": "the server's IP address or host name",
    "user": "the SSH user for the first connection (default: root)",
    "key": "your SSH private key, e.g. ~/.ssh/id_ed25519 (default: your SSH agent and ~/.ssh/id_*)",
    "domain": "a domain name the site answers on (repeat for more); none: plain HTTP",
    "email": "an e-mail address for certificate expiry notices",
    "name": "the app's short name on the server (default: the settings package's name)",
    "yes": "write the fixes without asking (without it and without a terminal, they are only shown)",
})
def init(c, project=None, host=None, user=None, key=None, domain=None, email=None, name=None, yes=False):
    """Set up this Django project for gangway: fabfile, deploy/production.yaml, readiness check and fixes."""
    from .cli import init as steps
    from .inventory import InventoryError
    from .project.django import ProjectError
    answers = steps.Answers(host=host, user=user, key=key, domains=tuple(d.lower() for d in domain or ()),
                            email=email, name=name)
    console = steps.Console(ask=input if sys.stdin.isatty() else None)
    try:
        outcome = steps.run(Path(project or "."), answers, yes, console)
    except (steps.InitError, ProjectError, InventoryError) as error:
        raise Exit(f"init failed: {error}", code=1) from None
    except (EOFError, KeyboardInterrupt):
        raise Exit("init stopped: nothing more was written", code=130) from None
    if outcome.blocking:
        raise Exit(f"init: {len(outcome.blocking)} problem(s) above would stop a deploy", code=1)


# --- provision --------------------------------------------------------------------------------------------------

@task(auto_shortflags=False, klass=VerboseTask,
      help={"inventory": INVENTORY_HELP,
            "dry-run": "show what would change (diffs of config files, the commands for the rest), change nothing",
            "verbose": VERBOSE_HELP})
def provision(c, inventory=None, dry_run=False, verbose=False):
    """Set up a server: packages, users, PostgreSQL, Gunicorn, nginx, TLS, firewall, SSH, jobs. Safe to re-run."""
    from .cli import dryrun, provision as steps
    from .session.run import Task
    from .session.runner import Reporter
    # A provision holds the deploy lock once the server has a place for it (not before the first provision):
    # it rewrites the unit and nginx's site, which a deploy running meanwhile relies on. A dry run reads only.
    # Several servers are provisioned at once (after the db host, whose facts the others need), each one's
    # output printed together when it ends; one that fails or cannot be reached stops only itself, and the
    # closing recap names it.
    def what(hosts=None) -> Task:
        return (Task("provision --dry-run", recap=False, hosts=hosts, keep_going=True, parallel=True) if dry_run
                else Task("provision", lock="provision", lock_if_provisioned=True, recap=False, hosts=hosts,
                          keep_going=True, parallel=True))
    try:
        steps.in_order(c, inventory, what,
                       lambda session, link: steps.provision_host(session, c.config, dry_run, link), verbose, dry_run)
    finally:
        if dry_run:
            Reporter().line(dryrun.DONE)


# --- deploy and rollback ----------------------------------------------------------------------------------------

@task(auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "ref": "the git commit, branch or tag to ship (default: HEAD)",
    "allow-dirty": "ship uncommitted changes to tracked files too, instead of refusing",
    "dry-run": "show what the deploy would do (release, environment, migrations, pruning) and change nothing",
    "allow-unsafe-migrations": "migrate even though the live release would trip on the pending migrations "
                               "(a dropped, renamed or retyped column, a NOT NULL one it does not fill) until "
                               "the switch: accept that window instead of refusing",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def deploy(c, inventory=None, ref="HEAD", allow_dirty=False, dry_run=False, allow_unsafe_migrations=False,
           verbose=False):
    """Ship a release: build it, migrate after a backup, switch traffic once it answers healthy."""
    from .cli import deploy as steps, dryrun
    from .connection import targets
    from .project import source
    from .session.run import Task, run_task, run_together
    from .session.runner import Reporter
    shipped = []  # the project, read once, before connecting to any host
    reporter = Reporter()

    def read(inv) -> None:
        build = inv.app.build
        if build and dry_run:
            reporter.line(f"build: `{build.command}` would run in a clean copy of {ref}; a dry run does not run it")
            build = None
        elif build:
            reporter.line(f"build: `{build.command}` in a clean copy of {ref} of {inv.app.source}")
        shipped.append(source.read(inv.app.source, ref, allow_dirty, inv.app.requirements, build,
                                   echo=lambda line: reporter.line(f"  | {line}")))
        if build:
            reporter.step("ok", "build", f"{', '.join(build.outputs)} built, shipped with the release")

    if not dry_run:
        from .cli.rolling import deploy_all
        run_together(c, inventory, Task("deploy", lock=lambda session: f"deploy {shipped[0].commit[:7]}",
                                        before=read, interrupted=steps.INTERRUPTED, recap=False,
                                        hosts=targets.app_hosts),
                     lambda sessions: deploy_all(sessions, shipped[0], allow_unsafe_migrations), verbose)
        return
    try:
        run_task(c, inventory, Task("deploy --dry-run", before=read, hosts=targets.app_hosts),
                 lambda session: steps.preview(session, shipped[0], allow_unsafe_migrations), verbose)
    finally:
        reporter.line(dryrun.DONE)


@task(auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "to": "the release to go back to (see `fab releases`); default: the previous good one",
    "migrate-back": "reverse the migrations the target release does not have (after a backup), with the code "
                    "of a release that has their files; --to LIVE --migrate-back reverses those the live "
                    "release does not know, without switching",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def rollback(c, inventory=None, to=None, migrate_back=False, verbose=False):
    """Go back to the previous good release (or --to RELEASE), migration-aware, with no failed request."""
    from .cli.deploy import INTERRUPTED
    from .cli.rolling import rollback_all
    from .connection import targets
    from .session.run import Task, run_together
    run_together(c, inventory, Task("rollback", lock=f"rollback{' to ' + to if to else ''}",
                                    interrupted=INTERRUPTED, recap=False, hosts=targets.app_hosts),
                 lambda sessions: rollback_all(sessions, to, migrate_back), verbose)


@task(name="releases", auto_shortflags=False, klass=VerboseTask,
      help={"inventory": INVENTORY_HELP, "verbose": VERBOSE_HELP})
def list_releases(c, inventory=None, verbose=False):
    """List the releases on the server: id, commit, when, and which is current, previous, failed."""
    from .cli.releases import releases_on
    from .connection import targets
    from .session.run import Task, run_task
    run_task(c, inventory, Task("releases", hosts=targets.app_hosts, keep_going=True), releases_on, verbose)


@task(auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "force": "end the holder even though its SSH connection is still alive (a run in progress, which then stops "
             "before its next step); a step of it already running on the server runs to its end, so unlock waits "
             "for it and says which release is live. Only when you are sure it is stuck",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def unlock(c, inventory=None, force=False, verbose=False):
    """Clear the deploy lock of a run that is stuck; refuses while that run is still connected, unless --force."""
    from .cli.releases import unlock_on
    from .session.run import Task, run_task
    # It cannot take the lock it clears; its audit line is written all the same.
    run_task(c, inventory, Task("unlock", audit="unlock" + (" --force" if force else "")),
             lambda session: unlock_on(session, force), verbose)


# --- manage, config, import-data --------------------------------------------------------------------------------

@task(auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "file": "a local file to send along: each argument equal to it is replaced by its path on the server, e.g. "
            "fab manage --file posts.json -- loaddata posts.json",
    "args": "the command and its arguments as a list, when called from Python; on the command line they "
            "follow --",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def manage(c, file=None, inventory=None, args=None, verbose=False):
    """Run a Django management command in the live release: fab manage -- createsuperuser."""
    import shlex
    from .cli.operate import READ_ONLY_COMMANDS, manage_on
    from .connection import targets
    from .session.run import Task, run_task
    words = shlex.split(args) if isinstance(args, str) else list(args or [])
    if not words:
        raise Exit("manage: say which command to run after --, e.g. fab manage -- createsuperuser", code=2)
    data = None
    if file:
        try:
            data = Path(file).read_bytes()
        except OSError as error:
            raise Exit(f"manage: cannot read {file} ({error.strerror}); give the path of a local file", code=2)
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    status = []
    # A command that may write (migrate, loaddata, shell...) holds the deploy lock: it cannot race a deploy.
    lock = None if words[0] in READ_ONLY_COMMANDS else f"manage {words[0]}"
    # One app host: the command acts on the one database all of them share.
    run_task(c, inventory, Task("manage", lock=lock, audit=lock, hosts=targets.one_app_host),
             lambda session: status.append(manage_on(session, words, terminal, (file, data) if file else None)),
             verbose)
    if any(status):
        raise Exit(code=next(s for s in status if s))


@task(auto_shortflags=False, iterable=["set_", "unset"], help={
    "inventory": INVENTORY_HELP,
    "set": "NAME=VALUE: set a variable (repeatable); the value is stored owner-only on the server",
    "unset": "NAME: remove a variable (repeatable)",
    "show": "print the values too (they are hidden otherwise)",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def config(c, inventory=None, set_=None, unset=None, show=False, verbose=False):
    """List the app's own variables (values hidden), or change them with --set/--unset and restart it healthy."""
    from .cli.operate import config_on, parse_changes
    from .connection import targets
    from .session.run import Task, run_task
    try:
        changes, removals = parse_changes(set_ or [], unset or [])
    except ValueError as error:
        raise Exit(f"config: {error}", code=2) from None
    run_task(c, inventory, Task("config", lock="config" if changes or removals else None,
                                hosts=targets.app_hosts),
             lambda session: config_on(session, changes, removals, show), verbose)


@task(name="import-data", auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "database": "the SQLite file to import (default: the one your local settings use)",
    "replace": "empty the server's database first (after a backup in backups/), and overwrite media files "
               "of the same name",
    "media": "the local media directory to upload (default: your local MEDIA_ROOT, else media/ in the project)",
    "no-media": "do not upload media files",
    "yes": "upload the media files without asking",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def import_data(c, inventory=None, database=None, replace=False, media=None, no_media=False, yes=False,
                verbose=False):
    """Copy the local SQLite database's content (and media files) to the server, checked by row counts."""
    from .cli.data import dump_locally, import_to, media_dir
    from .connection import targets
    from .session.run import Task, run_task
    prepared = []

    def prepare(inv) -> None:
        dump = dump_locally(Path(inv.app.source), database, inv.app.settings_module)
        folder = None if no_media else media_dir(Path(inv.app.source), media, dump.media_root)
        prepared.append((dump, folder))

    run_task(c, inventory, Task("import-data", lock="import-data", before=prepare, hosts=targets.one_app_host),
             lambda session: import_to(session, *prepared[0], replace, yes), verbose)


# --- status and logs --------------------------------------------------------------------------------------------

@task(auto_shortflags=False, klass=VerboseTask, help={
    "inventory": INVENTORY_HELP,
    "verbose": VERBOSE_HELP,
})
def status(c, inventory=None, verbose=False):
    """Is the site well? Releases, services, health, certificate, disk, backups, updates: exit 1/2 on WARN/FAIL."""
    from .cli.status import EXIT_CODES, FAIL, status_on
    from .session.run import Task, run_task
    codes = []
    try:
        run_task(c, inventory, Task("status", keep_going=True), lambda session: codes.append(status_on(session)),
                 verbose)
    except Exit as error:
        # A server that cannot be asked needs attention as much as one that answers FAIL.
        raise Exit(error.message, code=EXIT_CODES[FAIL]) from None
    if max(codes, default=0):
        raise Exit(code=max(codes))


@task(auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "lines": f"how many of the latest lines (default {defaults.LOG_LINES})",
    "follow": "keep showing new lines as they come, until Ctrl-C",
    "since": "only lines since then, in journalctl's words: \"1 hour ago\", \"today\", \"2026-11-27 10:00\"",
    "grep": "only lines containing this text (any case)",
    "level": "only lines of this journal priority or more severe: err, warning, info, ...",
    "nginx": "nginx's access and error logs instead of the app's journal",
    "process": "a process type's journal (app.processes, e.g. worker): every release's instance of it",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def logs(c, inventory=None, lines=None, follow=False, since=None, grep=None, level=None, nginx=False, process=None,
         verbose=False):
    """Show the app's log (all its Gunicorn instances), a worker's (--process NAME), or nginx's (--nginx)."""
    from .cli.logs import LogsError, logs_command
    from .connection import targets
    from .layout import Layout
    from .session.run import Task, run_task
    # --lines has no int default: invoke would cast the text itself and print a traceback for '2; x'.
    lines = defaults.LOG_LINES if lines is None else lines
    try:
        # Checked before connecting, so a typo costs no login.
        logs_command(Layout("app"), lines, follow, since, grep, level, nginx, process)
    except LogsError as error:
        raise Exit(f"logs: {error}", code=2) from None
    status = []
    def show(session) -> None:
        names = [p.name for p in session.inventory.app.processes]
        try:
            command = logs_command(session.layout, lines, follow, since, grep, level, nginx, process, names)
        except LogsError as error:
            raise Exit(f"logs: {error}", code=2) from None
        status.append(session.remote.attached(command, terminal=follow))

    def hosts(inv, selected):
        """The app's journal is on the hosts that run it; nginx's on the web hosts and the load balancer."""
        chosen = ([h for h in selected if h.has("lb") or h.has("web")] if nginx
                  else targets.app_hosts(inv, selected))
        if follow and len(chosen) > 1:
            raise Exit(f"logs: --follow follows one server, and {len(chosen)} have these logs: name one with "
                       f"-H, e.g. fab -H {inv.deploy_user}@{chosen[0].address} logs --follow", code=2)
        return chosen

    run_task(c, inventory, Task("logs", hosts=hosts, keep_going=True), show, verbose)
    # grep exits 1 when no line matched: that is an answer, not a failure. Ctrl-C ends a followed log by a
    # signal on the server: 255 from Remote.attached (no exit status), 130 from a shell.
    fine = (0, 1, 130, 255) if follow else (0, 1)
    if any(code not in fine for code in status):
        raise Exit(code=next(code for code in status if code not in fine))


# --- backups ----------------------------------------------------------------------------------------------------

@task(auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "media": "also pack the uploaded media files (shared/media) into NAME.media.tar.gz beside the dump",
    "download": "also copy the backup to this local directory (e.g. . for here); only you can read the copy",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def backup(c, inventory=None, media=False, download=None, verbose=False):
    """Back up the database now (pg_dump, compressed) into backups/ on the server; --media, --download DIR."""
    from .cli import backups as steps
    from .session.run import Task, run_task
    run_task(c, inventory, Task("backup", lock="backup", hosts=steps.on_db_host),
             lambda session: steps.backup_on(session, media, download), verbose)


@task(auto_shortflags=False, help={
    "inventory": INVENTORY_HELP,
    "download": "copy this backup (a NAME from the list) to your machine instead of listing",
    "to": "the local directory --download writes into (default: the current one)",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def backups(c, inventory=None, download=None, to=None, verbose=False):
    """List the backups on the server (name, size, age, kind), or --download NAME to your machine."""
    from .cli import backups as steps
    from .commands.backup import NAME
    from .facts.backups import DUMP, MEDIA
    from .session.run import Task, run_task
    name = (download if download.endswith((DUMP, MEDIA)) else download + DUMP) if download else None
    job = Task("backups", hosts=steps.holding_dumps)
    if name and not NAME.fullmatch(name):
        raise Exit(f"backups: --download {download!r} is not a backup's name: see the names `fab backups` lists",
                   code=2)
    results = run_task(c, inventory, job, lambda session: steps.backups_on(session, job, name, to), verbose)
    if name:
        steps.found_somewhere(results, "backups", name)


@task(auto_shortflags=False, positional=["backup"], help={
    "backup": "the backup to restore: a NAME `fab backups` lists (with or without .dump); with --upload, a local "
              "file",
    "inventory": INVENTORY_HELP,
    "yes": "restore without asking (needed when there is no terminal, e.g. in CI)",
    "upload": "BACKUP is a dump on this machine (from fab backup --download, or pg_dump --format=custom): upload it "
              "and restore it",
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def restore(c, backup, inventory=None, yes=False, upload=False, verbose=False):
    """Restore a database backup (or --upload a local one): a fresh backup first, maintenance mode around it."""
    from .cli import backups as steps
    from .commands.backup import dump_name
    from .session.run import Task, run_task
    if backup.startswith("-"):
        raise Exit(f"restore: {backup!r} is not a backup's name; for help: fab --help restore", code=2)
    sent, name = None, None
    if upload:
        try:
            sent = (backup, Path(backup).expanduser().read_bytes())
        except OSError as error:
            raise Exit(f"restore: cannot read {backup} ({error.strerror}); give the path of a local dump", code=2)
    else:
        name = dump_name(backup)
        if name is None:
            raise Exit(f"restore: {backup!r} is not a backup's name: see the names `fab backups` lists (a file on "
                       "this machine goes with --upload)", code=2)

    def ask(inventory_) -> None:
        if not yes:
            steps.confirm(inventory_, name or backup)

    job = Task("restore", lock=f"restore {name or 'upload'}", before=ask, interrupted=steps.RESTORE_INTERRUPTED,
               hosts=steps.holding_dumps if name else steps.on_db_host)
    results = run_task(c, inventory, job, lambda session: steps.restore_on(session, name, sent, job), verbose)
    if name:
        steps.found_somewhere(results, "restore", name)


@task(auto_shortflags=False, positional=["mode"], help={
    "mode": "on or off",
    "inventory": INVENTORY_HELP,
    "verbose": VERBOSE_HELP,
}, klass=VerboseTask)
def maintenance(c, mode, inventory=None, verbose=False):
    """Turn maintenance mode on or off: while on, nginx answers 503 with a maintenance page and Retry-After."""
    from .cli.backups import maintenance_on
    from .session.run import Task, run_task
    if mode not in ("on", "off"):
        raise Exit(f"maintenance: say on or off, not {mode!r}: fab maintenance on (help: fab --help maintenance)",
                   code=2)
    # Switched where visitors reach the site: on the load balancer when there is one, else on each web host; the
    # other servers hold no flag, take no lock and get no audit line.
    run_task(c, inventory, Task(f"maintenance {mode}", lock=lambda session: f"maintenance {mode}"
                                if session.inventory.fronts_site(session.host) else None),
             lambda session: maintenance_on(session, mode), verbose)


# --- the collection ---------------------------------------------------------------------------------------------

def namespace_for(fabfile: str | Path, inventory_dir: str = INVENTORY_DIR) -> Collection:
    """All tasks, with the inventory directory set relative to `fabfile` (pass the fabfile's `__file__`)."""
    root = Path(fabfile).resolve().parent
    namespace = Collection(init, provision, deploy, rollback, list_releases, unlock, manage, config, import_data,
                           status, logs, backup, backups, restore, maintenance)
    namespace.configure({"gangway": {"inventory": None, "known_hosts": None, "verbose": False,
                                     "inventory_dir": str(root / inventory_dir)}})
    _use_executor()
    return namespace


def _use_executor() -> None:
    """`fab manage -- ARGS` needs gangway's executor (tasks/cli/executor.py). invoke picks the executor from the
    config key tasks.executor_class before it loads any collection's configuration, so a collection cannot
    set it; the `fab` program loading this fabfile gets it as its default instead (a tasks.executor_class of
    the user's own config still wins). `gangway` (tasks/__main__.py) passes it directly."""
    from .cli.executor import Executor
    main = sys.modules.get("fabric.main")
    program = getattr(main, "program", None)
    if program is not None and program.executor_class is fabric.Executor:
        program.executor_class = Executor
