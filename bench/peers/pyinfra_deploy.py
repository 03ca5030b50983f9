"""A pyinfra deploy doing the same checks as a no-change `fab provision`: the same packages, files (with the
same content, mode and owner), directories and links, the same users and enabled services. Generated from
gangway's own steps by bench/peers/pyinfra_peer.py, so the two compare like for like."""

import json
import os

from pyinfra.operations import apt, files, server, systemd

spec = json.loads(open(os.environ["GANGWAY_PEER_SPEC"]).read())

apt.packages(name="packages", packages=spec["packages"], present=True)
for user in spec["users"]:
    server.user(name=f"user {user['name']}", user=user["name"], system=user["system"], home=user["home"],
                shell=user["shell"])
for d in spec["directories"]:
    files.directory(name=f"dir {d['path']}", path=d["path"], user=d["owner"], group=d["group"], mode=d["mode"])
for f in spec["files"]:
    files.put(name=f"file {f['path']}", src=f["src"], dest=f["path"], user=f["owner"], group=f["group"],
              mode=f["mode"])
for link in spec["links"]:
    files.link(name=f"link {link['path']}", path=link["path"], target=link["target"])
for path in spec["absent"]:
    files.file(name=f"absent {path}", path=path, present=False)
for unit in spec["services"]:
    systemd.service(name=f"service {unit}", service=unit, enabled=True)
