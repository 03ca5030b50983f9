"""`gangway TASK` (or `python -m gangway TASK`): the tasks without a fabfile, e.g. `gangway init` in a new project.

It is Fabric's own `fab` program with gangway's tasks, so every `fab` option works (`--list`, `-H`, `--help`).
The inventory directory is `deploy/` in the current directory, as a project's fabfile would set it.
"""

from __future__ import annotations

from pathlib import Path

from fabric import Config
from fabric.main import Fab

from .collection import namespace_for
from .cli.executor import Executor


def main() -> None:
    program = Fab(name="gangway", binary="gangway", version=_version(),
                  namespace=namespace_for(Path.cwd() / "fabfile.py"),
                  executor_class=Executor, config_class=Config)
    program.run()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("gangway")
    except PackageNotFoundError:
        return "unreleased"


if __name__ == "__main__":
    main()
