# Which of the services' variables (REDIS_URL, ...) the app's shared/env lacks or has wrong: what a rewrite
# by tasks/commands/release.py `env_file` would change in them. Reads only; run as root after the
# environment-file reader (tasks/commands/envfile.py `parse`) and the services' files' readers
# (tasks/commands/services.py `service_values`).
# Input: {"path": shared/env, "mark": its first line's prefix, "names": every service variable,
#         "services": {"secret": ..., "urls": {NAME: URL with {password}}, "media": ...} or null, "report": "@gangway"}.
# Prints one report line: {"exists": bool, "changed": [names]}; names only, never a value.
import json
import os
import sys

args = json.load(sys.stdin)
if not os.path.exists(args["path"]):
    print(args["report"] + " " + json.dumps({"exists": False, "changed": []}))
    sys.exit(0)
text = open(args["path"]).read()
env = parse(text)
first = text.split("\n", 1)[0]
written = set(first[len(args["mark"]):].split()) if first.startswith(args["mark"]) else set()
wanted = {}
if args["services"]:
    wanted, problem = service_values(args["services"])
    if problem:
        sys.exit(problem)
changed = [name for name in args["names"]
           if (env.get(name) != wanted[name] if name in wanted else name in written and name in env)]
print(args["report"] + " " + json.dumps({"exists": True, "changed": sorted(changed)}))
