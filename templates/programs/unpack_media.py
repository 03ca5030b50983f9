"""Unpack an uploaded tar of media files into the media directory: into a hidden directory there first, then
each file renamed into place (no partial file is ever visible), a file already there kept unless `replace`.

Input (JSON): {"media": the media directory, "archive": the uploaded tar, "replace": whether a file the
media directory already has is replaced}.
Prints one report line: {"media": {"added": n, "replaced": n, "kept": n}}.
"""

import json
import os
import shutil
import sys
import tarfile
import tempfile

args = json.load(sys.stdin)
media, archive, replace = args["media"], args["archive"], args["replace"]
staging = tempfile.mkdtemp(prefix=".gangway-upload-", dir=media)
counts = {"added": 0, "replaced": 0, "kept": 0}
try:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(staging, members, filter="data")
        else:
            for m in members:
                if m.name.startswith("/") or ".." in m.name.split("/"):
                    sys.exit("refusing the member " + repr(m.name))
            tar.extractall(staging, members)
    for folder, _, files in os.walk(staging):
        relative = os.path.relpath(folder, staging)
        target_dir = os.path.normpath(os.path.join(media, relative))
        os.makedirs(target_dir, exist_ok=True)
        for name in files:
            target = os.path.join(target_dir, name)
            exists = os.path.lexists(target)
            if exists and not replace:
                counts["kept"] += 1
                continue
            os.chmod(os.path.join(folder, name), 0o644)
            os.replace(os.path.join(folder, name), target)
            counts["replaced" if exists else "added"] += 1
finally:
    shutil.rmtree(staging, ignore_errors=True)
print("@gangway " + json.dumps({"media": counts}))
