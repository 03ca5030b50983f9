"""What the app hosts need of a db host (several servers), read back from it: the address PostgreSQL listens on,
the certificate of the CA gangway made there, and the app role's password. Run by root; its output is a fact
read by `fab provision` and never printed or logged.

Input (JSON): {"ca_cert": path, "secret": the password file}.
Prints one report line: {"address": listen_addresses, "ca_pem": text, "password": text}, a missing one as "".
"""

import json
import subprocess
import sys

args = json.load(sys.stdin)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


listen = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-t", "-A", "-c",
                         "show listen_addresses"], capture_output=True, text=True, cwd="/")
print("@gangway " + json.dumps({"address": listen.stdout.strip() if listen.returncode == 0 else "",
                                "ca_pem": read(args["ca_cert"]), "password": read(args["secret"]).strip()}))
