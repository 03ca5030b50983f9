"""`fab manage` and `fab config`: run Django's management commands in the live release, and keep the app's
own variables (secrets, settings of its own) on the server.

`fab manage -- ARGS` runs `manage.py ARGS` where the app runs: the live release's code and venv, as the app
user, with the app's environment, in a sandbox like the app's own (the system read-only, the media directory
writable), with a terminal when fab has one, so createsuperuser, shell and dbshell ask their questions.

`fab config` keeps the app's own variables in one file on the server that only root reads (systemd hands them
to the app): values travel inside uploaded files, never on a command line that `ps` or the journal shows, and
are printed only with --show. A change is applied like a deploy: a new instance of the live release's code
passes the readiness check and Django's deploy checks with the new environment, starts, answers healthy, then
takes the traffic; if it does not, the previous values are put back.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path


from ..facts import envsize
from ..project import diagnose
from ..commands import envfile, release as commands
from .deploy import relaunch
from ..inventory import ENV_NAME, check_env_name
from ..session.run import DeployError, Session, last_lines
from ..session.uploads import send_file

# --- fab manage -------------------------------------------------------------------------------------------------

# Django's own management commands that only read: they run without the deploy lock.
READ_ONLY_COMMANDS = frozenset({"check", "diffsettings", "dumpdata", "help", "inspectdb", "showmigrations",
                                "sqlflush", "sqlmigrate", "sqlsequencereset", "version"})


def with_upload(args: list[str], local: str, remote: str) -> list[str]:
    """ARGS with each word that names the local file replaced by its path on the server."""
    return [remote if arg == local else arg for arg in args]




def manage_on(session: Session, args: list[str], terminal: bool, file: tuple[str, bytes] | None = None) -> int:
    """Run `manage.py ARGS` in the live release; its output streams through. Returns its exit status."""
    state = session.state()
    if state.live is None:
        raise DeployError(f"no release is live on {session.host.address} yet: deploy first (fab deploy)")
    upload = None
    if file:
        upload = send_file(session, file[1], Path(file[0]).name, "the command did not run")
        args = with_upload(args, file[0], upload)
    layout = session.layout
    command = commands.manage_live(layout, state.live, session.app, args,
                                   layout.manage_unit(secrets.token_hex(4)), terminal=terminal, upload=upload)
    try:
        result = session.remote.attached_result(command, terminal)
    finally:
        if upload:
            session.remote.run(commands.remove_file(upload))
    if not result.ok:
        # On stderr: the command's own output (dumpdata > file) stays what it printed.
        for hint in diagnose.command_hints(f"{result.stdout}\n{result.stderr}"):
            print(f"hint: {hint}", file=sys.stderr, flush=True)
    return result.code


# --- fab config -------------------------------------------------------------------------------------------------

CONFIG_HEADER = "# The app's own variables, written by `fab config` (see `fab config --help`); read by systemd.\n"

def parse_config(text: str) -> dict[str, str]:
    """The variables of the `fab config` file, as systemd reads them."""
    return envfile.parse(text)


def encode_config(variables: dict[str, str]) -> str:
    return CONFIG_HEADER + "".join(envfile.encode_line(k, v) + "\n" for k, v in sorted(variables.items()))


def parse_changes(set_: list[str], unset: list[str]) -> tuple[dict[str, str], list[str]]:
    """--set NAME=VALUE and --unset NAME, checked: raises ValueError with the reason."""
    changes = {}
    for item in set_:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {name}: give NAME=VALUE, e.g. --set SENTRY_DSN=https://...")
        if problem := check_env_name(name):
            raise ValueError(f"--set: {name!r} {problem}")
        if problem := envfile.value_problem(value):
            raise ValueError(f"--set {name}: the value {problem}")
        changes[name] = value
    for name in unset:  # only the form: a name refused today may have been set before, and must go
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"--unset: {name!r} {check_env_name(name)}")
        if name in changes:
            raise ValueError(f"{name} is both set and unset: choose one")
    return changes, list(unset)




def config_on(session: Session, changes: dict[str, str], removals: list[str], show: bool) -> None:
    reporter, layout = session.reporter, session.layout
    if not changes and not removals:
        facts = session.remote.gather(commands.config_probes(layout))
        _list(session, parse_config(facts["config"]), show)
        return
    facts = session.remote.gather([*commands.config_probes(layout), envsize.probe(layout)])
    if not facts["unit_reads_config"]:
        raise DeployError(f"the app's service on {session.host.address} does not read {layout.config_env} yet "
                          "(it was provisioned by an older gangway): run `fab provision` once, then again "
                          "`fab config`")
    before = parse_config(facts["config"])
    after = {k: v for k, v in {**before, **changes}.items() if k not in removals}
    missing = [name for name in removals if name not in before]
    for name in missing:
        reporter.step("ok", name, "not set, nothing to unset")
    _refused_names(session, after)
    for name in sorted(set(changes) & {n for n, _ in session.inventory.app.env}):
        reporter.step("note", name, "is in the inventory's app.env too: the value set here wins")
    if after == before:
        reporter.line(f"{session.host.address}: nothing to change")
        return
    if problem := envsize.problem(envsize.after_config(facts["env_sizes"], after),
                                  envsize.limit_of(facts["env_sizes"])):
        raise DeployError(f"{problem}. Nothing was changed: the app keeps its variables. "
                          f"{envsize.ADVICE[0].upper()}{envsize.ADVICE[1:]}")
    state = session.state()
    upload = send_file(session, encode_config(after).encode(), "config.env", "nothing changed")
    ok, _, tail = session.run(("install", commands.config_install(layout, upload)))
    if not ok:
        raise DeployError(f"could not write {layout.config_env}; nothing changed:\n{last_lines(tail)}")
    named = ", ".join([f"{n} set" for n in sorted(changes) if before.get(n) != changes[n]]
                      + [f"{n} unset" for n in removals if n in before])
    if state.live is None:
        session.run(("keep", commands.config_kept(layout)))
        reporter.step("changed", "config", f"{named}; no release is live yet: the first deploy starts with them")
        return
    try:
        release = relaunch(session, state, f"config: {named}")
    except DeployError as error:
        restored, _, _ = session.run(("restore", commands.config_restore(layout)))
        raise DeployError(f"{error}\nThe previous values were " + ("restored." if restored else
                          f"NOT restored: check {layout.config_env} on the server.")) from None
    session.run(("keep", commands.config_kept(layout)))
    reporter.step("changed", "config", f"{named}; {release} (the same code as {state.live}) is live with them")


def _list(session: Session, variables: dict[str, str], show: bool) -> None:
    reporter = session.reporter
    if not variables:
        reporter.line(f"{session.host.address}: no variables of the app's own (set one with fab config --set "
                      "NAME=VALUE)")
        return
    reporter.line(f"{session.host.address}: {len(variables)} variable(s) of the app's own"
                  + ("" if show else " (values hidden; --show prints them)"))
    for name, value in sorted(variables.items()):
        reporter.line(f"  {name}={value}" if show else f"  {name}")
    _refused_names(session, variables)


def _refused_names(session: Session, variables: dict[str, str]) -> None:
    """Names set before gangway refused them (PATH, HOME, ...): say so, and how to remove them."""
    for name in sorted(variables):
        if problem := check_env_name(name):
            session.reporter.step("WARNING", name, f"{problem}; remove it: fab config --unset {name}")
