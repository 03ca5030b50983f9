"""`fab provision`: turn a fresh Debian server into a production home for a Django app."""

from __future__ import annotations

from fabric import task

from . import dryrun
from .. import provisioning
from ..connection import targets
from ..session.runner import Reporter, apply
from ..session.run import Session, Task, run_task


@task(auto_shortflags=False, klass=targets.VerboseTask,
      help={"inventory": targets.INVENTORY_HELP,
            "dry-run": "show what would change (diffs of config files, the commands for the rest), change nothing",
            "verbose": targets.VERBOSE_HELP})
def provision(c, inventory=None, dry_run=False, verbose=False):
    """Set up a server: packages, users, PostgreSQL, Gunicorn, nginx, TLS, firewall, SSH, jobs. Safe to re-run."""
    # A provision holds the deploy lock once the server has a place for it (not before the first provision):
    # it rewrites the unit and nginx's site, which a deploy running meanwhile relies on. A dry run reads only.
    # Several servers are provisioned at once, each one's output printed together when it ends; one that
    # fails or cannot be reached stops only itself, and the closing recap names it.
    what = (Task("provision --dry-run", recap=False, keep_going=True, parallel=True) if dry_run
            else Task("provision", lock="provision", lock_if_provisioned=True, recap=False, keep_going=True,
                      parallel=True))
    try:
        run_task(c, inventory, what, lambda session: provision_host(session, c.config, dry_run), verbose)
    finally:
        if dry_run:
            Reporter().line(dryrun.DONE)


def provision_host(session: Session, config=None, dry_run: bool = False) -> str:
    """Apply the steps (or only show them), print the recap and return its counts. `config` is the task's
    Fabric config: the proof of the deploy user's login is built from it like every other connection."""
    inventory, host, reporter, remote, stats = (session.inventory, session.host, session.reporter, session.remote,
                                                session.stats)
    keys = targets.public_keys(host, inventory)
    reporter.line(f"provision{' --dry-run' if dry_run else ''} {host.address} as {remote.user} ({inventory.source})")
    if not inventory.tls:
        reporter.line("  note: the inventory lists no domains, so the site is served over HTTP only; add "
                      "app.domains to get a certificate")
    server = provisioning.Server(inventory=inventory, host=host, public_keys=keys,
                                 prove_deploy_login=lambda: targets.prove_login(host, inventory, stats, config))
    recap = (dryrun.preview if dry_run else apply)(remote, provisioning.steps(server), reporter)
    counts = (f"{recap.steps} steps, {len(recap.changed)} {'would change' if dry_run else 'changed'}, "
              f"{len(recap.unchanged)} unchanged")
    reporter.line(f"recap {host.address}: {counts}; {stats.summary()}")
    return counts
