"""The tasks as one Fabric collection, configured for the project whose fabfile loads it.

A project's fabfile is two lines::

    from gangway.collection import namespace_for
    namespace = namespace_for(__file__)

Its inventory files then live in `deploy/` beside the fabfile (`deploy/production.yaml`), so the team versions
them with the code. This repository's own fabfile uses `inventory/`.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection

from .deploy import deploy, list_releases, rollback, unlock
from .init import init
from .provision import provision

# Where a project keeps its inventory files, relative to its fabfile.
INVENTORY_DIR = "deploy"


def namespace_for(fabfile: str | Path, inventory_dir: str = INVENTORY_DIR) -> Collection:
    """All tasks, with the inventory directory set relative to `fabfile` (pass the fabfile's `__file__`)."""
    root = Path(fabfile).resolve().parent
    namespace = Collection(init, provision, deploy, rollback, list_releases, unlock)
    namespace.configure({"gangway": {"inventory": None, "known_hosts": None,
                                     "inventory_dir": str(root / inventory_dir)}})
    return namespace
