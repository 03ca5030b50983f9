"""The files provision renders that a release is served with, as the server has them (read only, as root): for
each, its sha256 and the lines the inventory's keys land in (configuration, never secret), or absent.

Input (JSON): {"files": [[path, regex of the lines to show ("": none)], ...]}.
Prints one JSON line: {path: {"sha256": hex, "lines": [the matching lines, stripped]} or null when absent}.
"""

import hashlib
import json
import re
import sys

found = {}
for path, pattern in json.load(sys.stdin)["files"]:
    try:
        data = open(path, "rb").read()
    except OSError:
        found[path] = None
        continue
    text = data.decode(errors="replace")
    found[path] = {"sha256": hashlib.sha256(data).hexdigest(),
                   "lines": [line.strip() for line in text.splitlines() if pattern and re.search(pattern, line)]}
print(json.dumps(found))
