"""Remove from the shared static directory the files that no kept release has any more.

Input (JSON): {"root": the shared static directory, "releases": the static directories of the kept releases}.
Prints one report line: {"static_removed": how many files were removed}.
"""

import json
import os
import sys

args = json.load(sys.stdin)
root, kept = args["root"], args["releases"]
removed = 0
for folder, _, files in os.walk(root):
    for name in files:
        relative = os.path.relpath(os.path.join(folder, name), root)
        if not any(os.path.lexists(os.path.join(release, relative)) for release in kept):
            os.remove(os.path.join(folder, name))
            removed += 1
print("@gangway " + json.dumps({"static_removed": removed}))
