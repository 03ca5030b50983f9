"""`fab import-data`: the content of the project's local database, and its media files, onto the server.

The data is dumped on this machine by the project's own Django with its local settings (`runserver`'s), loaded
by the live release's code on the server as the app user, and checked by counting each model's rows on both
sides. A server whose database already holds rows of those models is left alone unless --replace (which takes a
backup first). The dump may hold personal data: it lives in owner-only files and is removed at the end.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


from ..commands import release as commands
from .. import timestamps
from ..session.uploads import send_file
from ..commands.render import TEMPLATES
from ..session.run import DeployError, Session, last_lines

DUMP_SCRIPT = TEMPLATES / "data" / "dump.py"


class DumpError(DeployError):
    """The local database could not be dumped."""


@dataclass
class Dump:
    fixture: bytes          # gzipped JSON
    rows: dict[str, int]    # rows per model, "app_label.model"
    database: str           # where they came from
    media_root: str         # the local settings' MEDIA_ROOT


def dump_locally(project: Path, database: str | None, settings_module: str = "") -> Dump:
    """Run the project's Django (this Python, its local settings) to dump its database; raises DumpError."""
    env = dict(os.environ)
    if settings_module and env.get("DJANGO_SETTINGS_MODULE") == settings_module:
        del env["DJANGO_SETTINGS_MODULE"]  # the production settings: the local data is in the local ones
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data.json"
        done = subprocess.run([sys.executable, str(DUMP_SCRIPT), str(project.resolve()), str(out),
                               str(Path(database).resolve()) if database else ""],
                              capture_output=True, text=True, env=env)
        report = _last_json(done.stdout)
        if done.returncode != 0 or "rows" not in report:
            reason = report.get("error") or (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DumpError(f"dumping the local database of {project} failed: {reason}. It runs "
                            f"{Path(sys.executable).name} manage.py with your local settings, as runserver does: "
                            "the Python running fab needs the project's requirements installed")
        return Dump(gzip.compress(out.read_bytes()), report["rows"], report["database"], report["media_root"])


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def media_archive(directory: Path) -> tuple[bytes, int]:
    """A tar of the regular files under `directory` (links and special files are left out): (tar, count)."""
    buffer, count = io.BytesIO(), 0
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not (Path(folder) / d).is_symlink())
            for name in sorted(files):
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
                    count += 1
    return buffer.getvalue(), count


def compare(local: dict[str, int], server: dict[str, int]) -> list[str]:
    """The models whose row counts differ, as "model: N here, M on the server"."""
    return [f"{model}: {count} here, {server.get(model, 'none')} on the server"
            for model, count in sorted(local.items()) if server.get(model) != count]


def held(rows: dict[str, int]) -> str:
    """Rows per model as a message says them: "3 row(s): a.b: 1, c.d: 2", or "no rows"."""
    full = {model: n for model, n in sorted(rows.items()) if n}
    return f"{sum(full.values())} row(s): " + ", ".join(f"{m}: {n}" for m, n in full.items()) if full else "no rows"


def replaced(before: dict[str, int], after: dict[str, int], imported: dict[str, int]) -> str:
    """What a --replace took out of the server's database, from its row counts read back before and after: the
    rows of the imported models, and those of other models that had rows and have none now (flush empties every
    table; the rows Django makes again right after, content types and permissions, are not lost)."""
    mine = {m: n for m, n in before.items() if m in imported}
    others = {m: n for m, n in before.items() if m not in imported and n and after.get(m) == 0}
    return (f"of the models imported, the server's database held {held(mine)}"
            + (f"; of models your data has none of, {held(others)}, emptied too" if others else ""))




def media_dir(project: Path, given: str | None, media_root: str) -> Path | None:
    if given:
        if not Path(given).is_dir():
            raise DumpError(f"--media {given} is not a directory")
        return Path(given)
    for candidate in (Path(media_root) if media_root else None, project / "media"):
        if candidate and candidate.is_dir():
            return candidate
    return None


def import_to(session: Session, dump: Dump, media: Path | None, replace: bool, yes: bool) -> None:
    reporter, layout, app = session.reporter, session.layout, session.app
    state = session.state()
    if state.live is None:
        raise DeployError(f"no release is live on {session.host.address} yet: deploy first (fab deploy); "
                          "its migrations create the tables the data goes into")
    unit = layout.manage_unit(secrets.token_hex(4))
    if dump.rows:
        # With --replace every model is counted: flush empties them all, and the messages say what went.
        ok, report, tail = session.run(("count", commands.count_rows(layout, state.live, app, unit,
                                                                     list(dump.rows), every=replace)))
        if not ok:
            raise DeployError(f"could not count the rows on the server:\n{last_lines(tail)}")
        if report["unknown"]:
            raise DeployError(f"the live release {state.live} has no model {', '.join(report['unknown'])}: "
                              "deploy the code that has them, then import again. Nothing was changed")
        before = report["rows"]
        full = {model: before[model] for model in dump.rows if before.get(model)}
        if full and not replace:
            raise DeployError("the server's database already has rows in "
                              + ", ".join(f"{m} ({n})" for m, n in sorted(full.items()))
                              + ", so nothing was imported. To replace everything in it with your local data "
                                "(a backup is taken first), run again with --replace")
        _load(session, state.live, unit, dump, replace, before)
    else:
        reporter.step("ok", "data", f"{dump.database} has no rows to import")
    if media is not None:
        _upload_media(session, media, replace, yes)


def _load(session: Session, live: str, unit: str, dump: Dump, replace: bool, before: dict[str, int]) -> None:
    """Load the dump (after a backup and a flush with `replace`) and read the row counts back; `before`: the
    counts read before (every model's with `replace`)."""
    reporter, layout, app = session.reporter, session.layout, session.app
    upload = send_file(session, dump.fixture, "data.json.gz", "nothing was imported")
    name = f"{timestamps.now().replace(':', '').replace('-', '')}-before-import"
    try:
        ok, report, tail = session.run(*commands.load_data(layout, live, session.database, unit, upload, replace, name))
    finally:
        session.run(("remove", commands.remove_file(upload)))
    backup = report.get("backup")
    kept = f" The backup taken before is {backup}." if backup else ""
    counted_ok, counted, count_tail = session.run(("count", commands.count_rows(layout, live, app, unit,
                                                                                list(dump.rows), every=replace)))
    after = counted.get("rows", {}) if counted_ok else None
    if not ok:
        raise DeployError(f"loading the data failed at its {report.get('failed', '?')} step.{kept} "
                          f"{_now(before, after, count_tail, backup)}\n{last_lines(tail)}")
    differ = compare(dump.rows, after) if after is not None else ["could not count them:\n" + count_tail]
    if differ:
        raise DeployError("THE ROW COUNTS DO NOT MATCH after loading the data: " + "; ".join(differ)
                          + f".{kept} Look at the data on the server (fab manage -- shell) before using it")
    reporter.step("changed", "data", f"{sum(dump.rows.values())} rows from {dump.database}, the same count read "
                  "back from the server for each model:"
                  + "".join(f"\n            {m}: {after[m]}" for m in sorted(dump.rows))
                  + (f"\n            before the import (read back): {replaced(before, after, dump.rows)}; "
                     f"backup taken first: {backup}" if replace else ""))


def _now(before: dict[str, int], after: dict[str, int] | None, tail: str, backup: str | None) -> str:
    """What the server's database holds after a load that failed, read back and compared with before."""
    if after is None:
        return f"What the server's database holds now could not be read back ({last_lines(tail, 1)})."
    changed = [f"{m}: {after.get(m, 'none')} ({n} before)" for m, n in sorted(before.items()) if after.get(m) != n]
    if not changed:
        return "Read back, the server's database holds what it held before: no row count changed."
    name = backup.rsplit("/", 1)[-1] if backup else None
    return (f"Read back, the server's database now holds {', '.join(changed)}"
            + (f"; `fab restore {name}` puts back what it held." if name else "."))


def _upload_media(session: Session, media: Path, replace: bool, yes: bool) -> None:
    reporter, layout = session.reporter, session.layout
    archive, count = media_archive(media)
    if not count:
        reporter.step("ok", "media", f"{media} has no files")
        return
    size = f"{count} file(s), {len(archive) / 1024 / 1024:.1f} MiB"
    if not yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            reporter.step("skipped", "media", f"{size} in {media} not uploaded: run again with --yes to upload "
                          f"them to {layout.media}, or --no-media")
            return
        answer = input(f"Upload {size} from {media} to {layout.media} on {session.host.address}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            reporter.step("skipped", "media", "not uploaded")
            return
    upload = send_file(session, archive, "media.tar", "no media file was changed")
    try:
        ok, report, tail = session.run(("media", commands.unpack_media(layout, session.app, upload, replace)))
    finally:
        session.run(("remove", commands.remove_file(upload)))
    if not ok:
        raise DeployError(f"uploading the media files failed; no partial file was left, and the upload was "
                          f"removed:\n{tail}")
    done = report["media"]
    reporter.step("changed", "media", f"{done['added']} added, {done['replaced']} replaced, {done['kept']} kept "
                  f"(the server's own, not overwritten{'' if replace else ' without --replace'}) in {layout.media}")
