"""The command line: ``python3 -m tests.testhost up|down|list|reboot|show|inventory|image``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .cluster import cluster_json, start_cluster
from .common import DEFAULT_SUITE, SUITES, TestHostError, require_host
from .host import _host_json, down, find, reboot_detached, start
from .image import ensure_image
from .network import NET_PREFIX
from .state import load_states, owner_alive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testhost", description="Throwaway Debian servers on this machine, for integration tests.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="boot a test host (or a cluster) that outlives this command; print it as JSON")
    p.add_argument("--suite", default=DEFAULT_SUITE, choices=SUITES)
    p.add_argument("--name")
    p.add_argument("--persistent", action="store_true",
                   help="boot its own copy of the image (kept across reboots, removed by down)")
    p.add_argument("--cluster", nargs="+", metavar="MEMBER",
                   help="boot one server per MEMBER on one private network instead (--name names the cluster)")
    p = sub.add_parser("down", help="tear down a test host or a cluster (with its members)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("name", nargs="?")
    g.add_argument("--all", action="store_true", help="every recorded host and any orphans")
    sub.add_parser("list", help="list recorded test hosts")
    p = sub.add_parser("reboot", help="power a host started with `up --persistent` off and on again")
    p.add_argument("name")
    p = sub.add_parser("show", help="print a host or a cluster as JSON, or one of its fields")
    p.add_argument("name")
    p.add_argument("field", nargs="?")
    p = sub.add_parser("inventory", help="write a gangway inventory for a host")
    p.add_argument("name")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--app", default="mysite")
    p.add_argument("--domain", action="append", dest="domains", help="default: app.test and www.app.test")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another key of the app section, e.g. source=../example")
    p = sub.add_parser("image", help="build the cached image only")
    p.add_argument("--suite", default=DEFAULT_SUITE, choices=SUITES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="testhost: %(message)s", stream=sys.stderr)

    try:
        if args.command == "image":
            t0 = time.monotonic()
            path = ensure_image(args.suite)
            print(json.dumps({"suite": args.suite, "image": str(path),
                              "seconds": round(time.monotonic() - t0, 1)}, indent=1))
        elif args.command == "up" and args.cluster:
            cluster = start_cluster(args.cluster, args.suite, args.name, persistent=args.persistent)
            cluster._detach()
            print(json.dumps({**cluster_json(cluster), "timings": cluster.timings}, indent=1))
        elif args.command == "up":
            host = start(args.suite, args.name, persistent=args.persistent)
            host._detach()
            print(json.dumps({**_host_json(host), "timings": host.timings}, indent=1))
        elif args.command == "down":
            for name in down(None if args.all else args.name):
                print(f"stopped {name}")
        elif args.command == "reboot":
            print(json.dumps({"name": args.name, "seconds": reboot_detached(args.name)}))
        elif args.command == "show":
            clusters = [s["cluster"] for s in load_states() if s["name"] == args.name and s.get("cluster")]
            shown = clusters[0] if clusters else _host_json(find(args.name))
            print(shown[args.field] if args.field else json.dumps(shown, indent=1))
        elif args.command == "inventory":
            keys = dict(item.split("=", 1) for item in args.set)
            keys = {k: int(v) if v.isdigit() else v for k, v in keys.items()}
            from tests.integration.inventory import write_inventory  # the tests' inventory writer
            write_inventory(find(args.name), args.out, args.app, args.domains or ("app.test", "www.app.test"),
                            **keys)
            print(args.out)
        elif args.command == "list":
            require_host(("ip",))
            for st in load_states():
                status = st.get("status") if owner_alive(st) else "stale"
                owner = "detached" if st.get("detached") else f"pid {st['owner']['pid']}"
                address = (st.get("host", {}).get("address") or st.get("cluster", {}).get("network")
                           or f"{NET_PREFIX}.{st['slot']}.2")
                print(f"{st['name']}\t{st['suite']}\t{address}\t{status}\t{owner}")
    except TestHostError as exc:
        print(f"testhost: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
