"""The tasks as one Fabric collection, configured for the project whose fabfile loads it.

A project's fabfile is two lines::

    from gangway.collection import namespace_for
    namespace = namespace_for(__file__)

Its inventory files then live in `deploy/` beside the fabfile (`deploy/production.yaml`), so the team versions
them with the code. This repository's own fabfile uses `inventory/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fabric
from invoke import Collection

from .cli.backups import backup, backups, maintenance, restore
from .cli.data import import_data
from .cli.deploy import deploy
from .cli.releases import list_releases, unlock
from .cli.rollback import rollback
from .cli.executor import Executor
from .cli.init import init
from .cli.logs import logs
from .cli.operate import config, manage
from .cli.provision import provision
from .cli.status import status

# Where a project keeps its inventory files, relative to its fabfile.
INVENTORY_DIR = "deploy"


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
    main = sys.modules.get("fabric.main")
    program = getattr(main, "program", None)
    if program is not None and program.executor_class is fabric.Executor:
        program.executor_class = Executor
