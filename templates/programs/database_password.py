"""The app role's password on a db host (several servers): made once here, root's alone, set on the role.

The password is 32 random bytes as hex, written to `secret` (0600, root's) when that file does not exist, and
kept from then on. The role is given it as a SCRAM-SHA-256 verifier computed here (PostgreSQL's own format,
RFC 7677), fed to psql on its input: the password itself never reaches a command line, a SQL text or a log. The
role's stored verifier is checked against the file the same way, so a second provision changes nothing.

Input (JSON): {"secret": the password file, "role": the app's role, "make": whether to change anything}.
Prints one report line: {"secret": "ok" | "absent" | "made", "role": "ok" | "no role" | "other password" |
"set"}.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys

args = json.load(sys.stdin)
ITERATIONS = 4096


def psql(sql, **variables):
    """`sql` on psql's input, with `variables` as psql variables read from its environment (\\getenv): not
    even the verifier shows on a command line."""
    env = dict(os.environ, **{"GANGWAY_" + name.upper(): value for name, value in variables.items()})
    lines = "".join("\\getenv %s GANGWAY_%s\n" % (name, name.upper()) for name in variables)
    argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
    out = subprocess.run(argv, input=lines + sql, capture_output=True, text=True, cwd="/", env=env)
    if out.returncode != 0:
        sys.exit("psql: " + out.stderr.strip())
    return out.stdout.strip()


def keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(client).digest(), hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def matches(stored, password):
    """Whether the role's SCRAM-SHA-256 verifier is that of `password`."""
    try:
        method, rest = stored.split("$", 1)
        count_salt, stored_server = rest.split("$")
        count, salt = count_salt.split(":")
        stored_key, server_key = stored_server.split(":")
        want = keys(password, base64.b64decode(salt), int(count))
        return method == "SCRAM-SHA-256" and want == (base64.b64decode(stored_key), base64.b64decode(server_key))
    except ValueError:
        return False


def verifier(password):
    salt = secrets.token_bytes(16)
    stored_key, server_key = keys(password, salt, ITERATIONS)
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (ITERATIONS, base64.b64encode(salt).decode(),
                                         base64.b64encode(stored_key).decode(), base64.b64encode(server_key).decode())


report = {"secret": "ok" if os.path.isfile(args["secret"]) else "absent"}
if report["secret"] == "absent" and args["make"]:
    os.umask(0o077)
    part = args["secret"] + ".gw-new"
    with open(part, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.chown(part, 0, 0)
    os.replace(part, args["secret"])
    report["secret"] = "made"
password = None
if report["secret"] != "absent":
    with open(args["secret"]) as f:
        password = f.read().strip()
found = psql("select count(*) || ':' || coalesce(max(rolpassword), '') from pg_authid where rolname = :'role';\n",
             role=args["role"])
exists, _, stored = found.partition(":")
if exists != "1":
    report["role"] = "no role"
elif password is not None and matches(stored, password):
    report["role"] = "ok"
else:
    report["role"] = "other password"
    if args["make"] and password is not None:
        psql("alter role :\"role\" with login password :'verifier';\n", role=args["role"], verifier=verifier(password))
        report["role"] = "set"
print("@gangway " + json.dumps(report, sort_keys=True))
