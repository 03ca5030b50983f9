# Redis as the app sees it, read as root: `fab status` and `fab provision` (tasks/commands/services.py). Run
# after the environment-file reader of tasks/commands/envfile.py (`parse`) and the password file's reader
# (tasks/commands/services.py `redis_password`).
# Input: {"secret": the password file, "host": ..., "port": ..., "env": the app's shared/env,
#         "urls": {NAME: URL with {password}}, "require": bool, "report": "@gangway"}.
# Prints one report line: {"secret": "ok" | why not, "answer": "PONG" or the error, "anonymous": what a client
# without the password gets, "used_memory": "1.23M", "listening": [local addresses on the port], "env":
# {NAME: "ok" | "missing" | "stale"} or null when there is no shared/env yet}. The password is sent on the
# socket only: never printed, never in a command line. With "require", exits 1 (saying why on stderr) unless
# Redis answers the password, refuses a client without it, and listens on the loopback address only.
import json
import os
import socket
import sys

args = json.load(sys.stdin)
out = {"secret": "ok", "answer": "", "anonymous": "", "used_memory": "", "listening": None, "env": None}


def command(sock, reader, *words):
    """One RESP command and its reply: a status or error line, or a bulk string."""
    sock.sendall(b"".join([b"*%d\r\n" % len(words)] + [b"$%d\r\n%s\r\n" % (len(w), w) for w in
                                                        (w.encode() for w in words)]))
    line = reader.readline().decode(errors="replace").rstrip("\r\n")
    if line.startswith("$") and line[1:].isdigit():  # a bulk string ("$-1" is none)
        return reader.read(int(line[1:]) + 2)[:-2].decode(errors="replace")
    return line[1:] if line[:1] in "+-" else line


def listening(port):
    """The local addresses a TCP socket listens on at `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for name, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hexport = fields[1].partition(":")
            if fields[3] == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))  # kernel order, word by word
                found.append(socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, raw))
    return sorted(set(found))


password, problem = redis_password(args["secret"])
if problem:
    out["secret"] = problem
out["listening"] = listening(args["port"])
try:
    with socket.create_connection((args["host"], args["port"]), timeout=5) as anonymous:
        out["anonymous"] = command(anonymous, anonymous.makefile("rb"), "PING")
    if password is not None:
        with socket.create_connection((args["host"], args["port"]), timeout=5) as sock:
            reader = sock.makefile("rb")
            auth = command(sock, reader, "AUTH", password)
            out["answer"] = command(sock, reader, "PING") if auth == "OK" else auth
            memory = command(sock, reader, "INFO", "memory")
            out["used_memory"] = dict(line.split(":", 1) for line in memory.splitlines()
                                      if ":" in line).get("used_memory_human", "")
except OSError as error:
    out["answer"] = out["answer"] or "cannot connect to %s:%s (%s)" % (args["host"], args["port"],
                                                                         error.strerror or error)
if os.path.exists(args["env"]) and password is not None:
    env = parse(open(args["env"]).read())
    out["env"] = {name: "missing" if name not in env else
                  "ok" if env[name] == url.replace("{password}", password) else "stale"
                  for name, url in sorted(args["urls"].items())}
print(args["report"] + " " + json.dumps(out, sort_keys=True))
if args["require"]:
    loopback = {"127.0.0.1", "::1"}
    why = ([f"the password file {args['secret']} {out['secret']}"] if out["secret"] != "ok" else []) \
        + ([f"Redis did not answer PING with the password: {out['answer']}"] if out["answer"] != "PONG" else []) \
        + ([f"Redis answered a client without the password: {out['anonymous']}"]
           if not out["anonymous"].startswith("NOAUTH") else []) \
        + ([f"Redis listens beyond the loopback address: {', '.join(out['listening'])}"]
           if set(out["listening"]) - loopback else [])
    if why:
        sys.stderr.write("; ".join(why) + "\n")
        sys.exit(1)
