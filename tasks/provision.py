"""`fab provision`: turn a fresh Debian server into a production home for a Django app."""

from __future__ import annotations

from fabric import task
from invoke.exceptions import Exit

from . import dryrun, provisioning, targets
from .inventory import InventoryError
from .remote import RemoteError, Stats
from .runner import Reporter, apply


@task(auto_shortflags=False, klass=targets.VerboseTask,
      help={"inventory": targets.INVENTORY_HELP,
            "dry-run": "show what would change (diffs of config files, the commands for the rest), change nothing",
            "verbose": "print every remote command as it runs (or set gangway.verbose / FABRIC_GANGWAY_VERBOSE=1)"})
def provision(c, inventory=None, dry_run=False, verbose=False):
    """Set up a server: packages, users, PostgreSQL, Gunicorn, nginx, TLS, firewall, SSH, jobs. Safe to re-run."""
    reporter = Reporter()
    targets.set_verbose(c, verbose)
    try:
        inv, hosts = targets.select(c, inventory)
        for host in hosts:
            provision_host(inv, host, reporter, c.config, dry_run)
    except (InventoryError, RemoteError) as error:
        raise Exit(f"provision{' --dry-run' if dry_run else ''} failed: {error}", code=1) from None
    finally:
        if dry_run:
            reporter.line(dryrun.DONE)


def provision_host(inventory, host, reporter: Reporter, config=None, dry_run: bool = False) -> None:
    """Log in (as the deploy user once it exists), apply the steps (or only show them), print the recap.
    `config` is the task's Fabric config: every connection (the first login, the proof of the deploy user's)
    is built from it."""
    stats = Stats()
    keys = targets.public_keys(host, inventory)
    remote = targets.login(host, inventory, stats, config)
    reporter.line(f"provision{' --dry-run' if dry_run else ''} {host.address} as {remote.user} ({inventory.source})")
    if not inventory.tls:
        reporter.line("  note: the inventory lists no domains, so the site is served over HTTP only; add "
                      "app.domains to get a certificate")
    server = provisioning.Server(inventory=inventory, host=host, public_keys=keys,
                                 prove_deploy_login=lambda: targets.prove_login(host, inventory, stats, config))
    try:
        recap = (dryrun.preview if dry_run else apply)(remote, provisioning.steps(server), reporter)
    finally:
        remote.close()
    reporter.line(f"recap {host.address}: {recap.steps} steps, {len(recap.changed)} "
                  f"{'would change' if dry_run else 'changed'}, "
                  f"{len(recap.unchanged)} unchanged; {stats.summary()}")
