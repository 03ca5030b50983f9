# The names and value sizes (bytes, as systemd will pass them) of the app's two environment files, the names
# gangway last wrote into shared/env (its mark line), and the server's ARG_MAX: what tasks/facts/envsize.py
# needs to refuse an environment too large to start with. Values are never printed. Runs as root after the
# environment-file reader of tasks/commands/envfile.py (`parse`).
# Input: {"env": path of shared/env, "config": path of the config file, "mark": the mark line's prefix}.
import json
import os
import sys

args = json.load(sys.stdin)


def read(path):
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return {}, []
    marks = [line[len(args["mark"]):].split() for line in text.splitlines() if line.startswith(args["mark"])]
    return {name: len(value.encode()) for name, value in parse(text).items()}, (marks[-1] if marks else [])


env, managed = read(args["env"])
config, _ = read(args["config"])
print(json.dumps({"env": env, "managed": managed, "config": config, "arg_max": os.sysconf("SC_ARG_MAX")}))
