"""The project being deployed, read from its git repository on this machine: which commit, and its files.

With a build step (app.build in the inventory), the command runs before packing in a clean copy of the commit
being shipped, never in the work tree: what ships is what the commit builds to, whichever ref is deployed and
whatever the work tree holds (node_modules, stale outputs, untracked files), and the user's files are never
touched. The outputs it writes join the archive although git does not track them.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import signal
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ..inventory import Build

# A build that runs longer than this is stopped (with everything it started).
BUILD_TIMEOUT_S = 30 * 60
# The lines of a failed build's output that its error shows (all of it was printed as it ran).
BUILD_TAIL_LINES = 30


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
         requirements_file: str = "requirements.txt", build: Build | None = None,
         echo: Callable[[str], None] = lambda line: None, timeout: float = BUILD_TIMEOUT_S) -> Source:
    """Resolve `ref` in the repository holding `directory`, and pack that directory as it is in the commit.

    A work tree with uncommitted changes is refused unless `allow_dirty`: then the changes to tracked files
    are shipped too (as a stash commit; the work tree is left alone) and the release id says "dirty".
    With `build`, its command runs in a clean copy of that commit (its output goes to `echo` line by line)
    and its outputs are added to the archive.
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
    if build:
        archive = _built_archive(top, commit, prefix, build, echo, timeout)
    else:
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


# --- the build step ----------------------------------------------------------------------------------------

def _built_archive(top: Path, commit: str, prefix: str, build: Build, echo: Callable[[str], None],
                   timeout: float) -> bytes:
    """Export the whole commit (a build may read files above the project), run the command in the project's
    directory there, and pack the project with the outputs; the export is removed afterwards."""
    for output in build.outputs:
        _check_output_path(output)
    with tempfile.TemporaryDirectory(prefix="gangway-build-") as tmp:
        export = Path(tmp) / "src"
        export.mkdir()
        tar = _git(top, "archive", "--format=tar", commit, binary=True)
        unpacked = subprocess.run(["tar", "-x", "-C", str(export)], input=tar, capture_output=True, check=False)
        if unpacked.returncode != 0:
            raise SourceError(f"could not export commit {commit[:7]} for the build step: "
                              f"{unpacked.stderr.decode(errors='replace').strip()}")
        project = export / prefix if prefix else export
        _run_build(build.command, project, commit, echo, timeout)
        built = [(output, _output_files(project, output, build.command, commit)) for output in build.outputs]
        committed = _git(top, "archive", "--format=tar", f"{commit}:{prefix}" if prefix else commit, binary=True)
        return _pack(committed, project, built, int(_git(top, "log", "-1", "--format=%ct", commit)))


def _output_files(project: Path, output: str, command: str, commit: str) -> list[Path]:
    """The directories and files of one output, refusing what could ship something from outside the project."""
    path = project / output
    if not os.path.lexists(path):
        raise SourceError(f"the build command `{command}` succeeded but did not write {output} (listed in "
                          f"app.build.outputs), in a clean copy of commit {commit[:7]}. Outputs are paths relative "
                          "to the project directory (the one with manage.py); check the path, and that the "
                          "build writes there without relying on files that are not committed")
    root = project.resolve()
    if root != path.resolve() and root not in path.resolve().parents:
        raise SourceError(f"app.build.outputs: {output} leads outside the project (through a symbolic link): "
                          "only files inside the project can ship")
    found = [path]
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            found += [Path(folder) / name for name in sorted(dirs) + sorted(files)]
            dirs.sort()
    for item in found:
        if item.is_symlink() or not (item.is_dir() or item.is_file()):
            kind = "a symbolic link" if item.is_symlink() else "not a plain file"
            raise SourceError(f"the build output {item.relative_to(project).as_posix()} is {kind}: outputs "
                              "ship plain files and directories only")
    return found


def _pack(committed: bytes, project: Path, built: list[tuple[str, list[Path]]], mtime: int) -> bytes:
    """The committed project with the build outputs: they replace whatever the commit had at those paths."""
    replaced = [output for output, _ in built]

    def is_built(name: str) -> bool:
        name = name.removeprefix("./")
        return any(name == output or name.startswith(output + "/") for output in replaced)

    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(committed)) as source, \
            tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for member in source:
            if not is_built(member.name):
                archive.addfile(member, source.extractfile(member) if member.isfile() else None)
        for _, paths in built:
            for path in paths:
                info = tarfile.TarInfo(path.relative_to(project).as_posix())
                info.mtime, info.uid, info.gid = mtime, 0, 0
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(info)
                else:
                    info.size = path.stat().st_size
                    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    with path.open("rb") as data:
                        archive.addfile(info, data)
    return buffer.getvalue()


def _check_output_path(output: str) -> None:
    path = PurePosixPath(output)
    if not output or path.is_absolute() or ".." in path.parts or output.startswith("~"):
        raise SourceError(f"app.build.outputs: {output!r} must be a path inside the project (relative to the "
                          "directory with manage.py), e.g. static/dist")


def _run_build(command: str, project: Path, commit: str, echo: Callable[[str], None], timeout: float) -> None:
    """`sh -c COMMAND` in the project's copy: output printed as it comes, its tail kept for the error; stopped
    with all its children after `timeout` seconds."""
    tail: collections.deque[str] = collections.deque(maxlen=BUILD_TAIL_LINES)
    where = (f"in a clean copy of commit {commit[:7]} (what is committed: no untracked files, no node_modules "
             "from your work tree)")
    try:
        process = subprocess.Popen(["sh", "-c", command], cwd=project, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as error:
        raise SourceError(f"the build command could not start: {error}") from None
    timer = _Deadline(process, timeout)
    try:
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail.append(line)
            echo(line)
        code = process.wait()
    except BaseException:
        timer.kill()
        process.wait()
        raise
    finally:
        timer.cancel()
        process.stdout.close()
    shown = "\n".join(f"    {line}" for line in tail)
    if timer.fired:
        raise SourceError(f"the build command `{command}` did not finish within {int(timeout)} s {where}, and "
                          f"was stopped; nothing was shipped. Its last lines:\n{shown}")
    if code != 0:
        hint = (" (exit status 127: a program it calls is not installed on this machine, or not on the PATH)"
                if code == 127 else "")
        raise SourceError(f"the build command `{command}` failed with exit status {code}{hint}, {where}; nothing "
                          "was shipped. If it works in your work tree, it needs something that is not committed. "
                          f"Its last lines:\n{shown}")


class _Deadline:
    """Kills a process group once the time is up (the command and all it started)."""

    def __init__(self, process: subprocess.Popen, timeout: float):
        self.process, self.fired = process, False
        self.timer = threading.Timer(timeout, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        self.fired = True
        self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self) -> None:
        self.timer.cancel()
