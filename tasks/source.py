"""The project being deployed, read from its git repository on this machine: which commit, and its files."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path


class SourceError(Exception):
    """The project cannot be shipped as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    commit: str
    ref: str
    dirty: bool
    archive: bytes          # gzipped tar of the project directory at that commit
    requirements: bytes     # requirements.txt at that commit (b"" if there is none)


def _git(directory: Path, *args: str, binary: bool = False) -> str | bytes:
    try:
        result = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise SourceError("git is not installed on this machine; deploys ship a git commit") from None
    if result.returncode != 0:
        raise SourceError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout if binary else result.stdout.decode().strip()


def read(directory: Path, ref: str = "HEAD", allow_dirty: bool = False,
         requirements_file: str = "requirements.txt") -> Source:
    """Resolve `ref` in the repository holding `directory`, and pack that directory as it is in the commit.

    A work tree with uncommitted changes is refused unless `allow_dirty`: then the changes to tracked files
    are shipped too (as a stash commit; the work tree is left alone) and the release id says "dirty".
    """
    directory = directory.resolve()
    if not (directory / "manage.py").is_file():
        raise SourceError(f"{directory} has no manage.py: set app.source in the inventory to your Django "
                          "project's directory (the one with manage.py)")
    try:
        prefix = _git(directory, "rev-parse", "--show-prefix")
    except SourceError:
        raise SourceError(f"{directory} is not in a git repository: deploys ship a commit, so run `git init` "
                          "and commit your project first") from None
    try:
        commit = _git(directory, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except SourceError:
        raise SourceError(f"{ref!r} is not a commit, branch or tag of the repository at {directory}") from None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no", "--", ".")
    dirty = bool(status) and ref == "HEAD"
    if dirty and not allow_dirty:
        changed = ", ".join(line[3:] for line in status.splitlines()[:5])
        raise SourceError(f"uncommitted changes in {directory} ({changed}): commit them, or deploy them anyway "
                          "with --allow-dirty")
    if dirty:
        commit = _git(directory, "stash", "create") or commit
    tree = f"{commit}:{prefix}" if prefix else commit
    top = Path(_git(directory, "rev-parse", "--show-toplevel"))  # archive paths are relative to where git runs
    archive = _git(top, "archive", "--format=tar.gz", tree, binary=True)
    try:
        requirements = _git(directory, "show", f"{commit}:{prefix}{requirements_file}", binary=True)
    except SourceError:
        raise SourceError(f"{requirements_file} is not in commit {commit[:7]} of {directory}: the server builds "
                          "the app's Python environment from it. List your dependencies there (e.g. `pip freeze "
                          "> requirements.txt`), commit it, or set app.requirements in the inventory") from None
    return Source(commit=commit, ref=ref, dirty=dirty, archive=archive, requirements=requirements)


def requirements_hash(requirements: bytes, python: str, extra: str) -> str:
    """Names the venv: the same requirements on the same Python reuse the same environment."""
    return hashlib.sha256(b"\0".join((requirements, python.encode(), extra.encode()))).hexdigest()[:16]
