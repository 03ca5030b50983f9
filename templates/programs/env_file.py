# The app's environment file (shared/env): created once with a new secret key, then the keys gangway manages
# kept up to date. Run as root by tasks/commands/release.py `env_file`, after the environment-file reader of
# tasks/commands/envfile.py (`split_line`), which reads a line as systemd does, and the Redis password
# file's and the media credentials' readers (tasks/commands/services.py `service_values`).
# Input: {"path": ..., "managed": {NAME: "NAME=encoded line"}, "mark": "# comment naming the managed keys",
#         "services": {"secret": the Redis password file, "urls": {NAME: URL with {password}},
#                      "media": the media store's credentials file} (each part optional) or null,
#         "hidden": [names whose values a preview replaces by a digest], "preview": bool, "if_exists": bool,
#         "report": "@gangway"}.
# A key gangway wrote before and no longer manages is removed; lines the operator added are left alone. The
# secret key is generated here and never printed. With "preview", nothing is written: the file as it is and
# as it would be are printed as one report line ({"env_before", "env_after"}). With "if_exists", a missing file is left missing (the first deploy creates it).
# The services' variables (REDIS_URL, ..., the media store's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) are
# made here from the root-only files that provision wrote on the server (`service_values`).
import hashlib
import json
import os
import secrets
import sys

args = json.load(sys.stdin)
path, managed, mark = args["path"], dict(args["managed"]), args["mark"]
old = open(path).read() if os.path.exists(path) else None
if old is None and args.get("if_exists"):
    sys.exit(0)
if args.get("services"):
    values, problem = service_values(args["services"])
    if problem:
        sys.exit(problem)
    for name, value in values.items():
        managed[name] = '%s="%s"' % (name, value)  # nothing in them needs escaping (checked by their readers)
lines = old.splitlines() if old is not None else []
before = set()
for line in lines:
    if line.startswith(mark):
        before = set(line[len(mark):].split())
lines = [line for line in lines if not line.startswith(mark)]


def key_of(line):
    split = split_line(line)
    return split[0] if split else None


gone = before - set(managed) - {"DJANGO_SECRET_KEY"}
lines = [line for line in lines if key_of(line) not in gone]
if "DJANGO_SECRET_KEY" not in {key_of(line) for line in lines}:
    lines.append("DJANGO_SECRET_KEY='%s'" % secrets.token_urlsafe(50))
out = [mark + " ".join(sorted(managed))]
for line in lines:
    key = key_of(line)
    out.append(managed.pop(key) if key in managed else line)
out += list(managed.values())
text = "\n".join(out) + "\n"


def hidden(text):
    """`text` with the values of the hidden names (the URLs that hold the Redis password) replaced by a digest:
    a preview still tells a change, and the password stays on the server."""
    if text is None:
        return None
    return "\n".join('%s="sha256:%s"' % (key_of(line), hashlib.sha256(line.encode()).hexdigest()[:16])
                     if key_of(line) in args["hidden"] else line for line in text.split("\n"))


if args["preview"]:
    print(args["report"] + " " + json.dumps({"env_before": hidden(old), "env_after": hidden(text)}))
elif old != text:
    tmp = path + ".gw-new"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
