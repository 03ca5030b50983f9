"""A db host's TLS (several servers): the CA gangway makes there once, and PostgreSQL's certificate it signs.

The CA's key is made here and never leaves this host (root's alone, 0600); its certificate is what the app hosts
check the database against (sslmode=verify-full). PostgreSQL's certificate names the db host's private address
(subjectAltName IP:ADDRESS) and is made anew only when it is missing, names another address, is not signed by
this CA, or expires within `renew_days`. Run by root; every value travels as argv or file, never as shell text.

Input (JSON): {"ca_cert", "ca_key", "cert", "key": paths, "address": the private address, "app": the app's
name (the CA's common name), "ca_days", "cert_days", "renew_days": ints, "make": whether to change anything}.
Prints one report line: {"ca": "ok" | "absent" | "made", "server": "ok" | what is wrong | "made"}.
"""

import ipaddress
import json
import os
import pwd
import secrets
import subprocess
import sys
import tempfile

args = json.load(sys.stdin)
address = ipaddress.ip_address(args["address"])


def openssl(*argv):
    out = subprocess.run(("openssl",) + argv, capture_output=True, text=True, cwd="/")
    return out.returncode, out.stdout


def install(source, path, owner, mode):
    """`source` becomes `path` with its owner and mode set before it appears."""
    user = pwd.getpwnam(owner)
    os.chown(source, user.pw_uid, user.pw_gid)
    os.chmod(source, mode)
    os.replace(source, path)


def ca_state():
    if os.path.isfile(args["ca_cert"]) and os.path.isfile(args["ca_key"]):
        return "ok"
    return "absent"


def server_state():
    if not (os.path.isfile(args["cert"]) and os.path.isfile(args["key"])):
        return "absent"
    rc, out = openssl("x509", "-in", args["cert"], "-noout", "-ext", "subjectAltName")
    named = set()
    for part in out.replace("\n", ",").split(","):
        kind, _, value = part.strip().partition(":")
        if kind == "IP Address":
            try:
                named.add(ipaddress.ip_address(value.strip()))
            except ValueError:
                pass
    if rc != 0 or named != {address}:
        return "names another address"
    if openssl("verify", "-CAfile", args["ca_cert"], args["cert"])[0] != 0:
        return "not signed by the CA"
    if openssl("x509", "-in", args["cert"], "-noout", "-checkend", str(args["renew_days"] * 86400))[0] != 0:
        return "expires within %d days" % args["renew_days"]
    return "ok"


def make_ca(work):
    key, cert = os.path.join(work, "ca.key"), os.path.join(work, "ca.pem")
    rc, _ = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", str(args["ca_days"]),
                    "-subj", "/CN=gangway database CA of " + args["app"],
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    if rc != 0:
        sys.exit("openssl could not make the CA")
    install(key, args["ca_key"], "root", 0o600)
    install(cert, args["ca_cert"], "root", 0o644)


def make_server(work):
    key, csr, cert, ext = (os.path.join(work, name) for name in ("server.key", "server.csr", "server.pem", "ext"))
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:%s\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" % address)
    steps = [("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=%s" % address),
             ("x509", "-req", "-in", csr, "-CA", args["ca_cert"], "-CAkey", args["ca_key"],
              "-set_serial", "0x" + secrets.token_hex(16), "-days", str(args["cert_days"]), "-extfile", ext,
              "-out", cert)]
    for step in steps:
        if openssl(*step)[0] != 0:
            sys.exit("openssl could not make the server certificate (%s)" % step[0])
    install(key, args["key"], "postgres", 0o600)
    install(cert, args["cert"], "postgres", 0o644)


report = {"ca": ca_state()}
report["server"] = "absent" if report["ca"] != "ok" else server_state()
if args["make"] and (report["ca"] != "ok" or report["server"] != "ok"):
    os.umask(0o077)
    work = tempfile.mkdtemp(dir=os.path.dirname(args["ca_key"]), prefix=".gangway-tls-")
    try:
        if report["ca"] != "ok":
            make_ca(work)
            report["ca"] = "made"
        make_server(work)
        report["server"] = "made"
    finally:
        for name in os.listdir(work):
            os.remove(os.path.join(work, name))
        os.rmdir(work)
print("@gangway " + json.dumps(report, sort_keys=True))
