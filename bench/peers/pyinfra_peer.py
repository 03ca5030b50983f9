"""Run pyinfra over the same state a provisioned server has, for a like-for-like no-change timing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tasks import defaults, provisioning
from tasks.facts.steps import Absent, Directory, File, Link

VENV = Path.home() / ".cache" / "gangway" / "peers"
DEPLOY = Path(__file__).resolve().parent / "pyinfra_deploy.py"


def ensure_pyinfra() -> Path:
    binary = VENV / "bin" / "pyinfra"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "pyinfra>=3,<4"], check=True)
    return binary


def spec(server: provisioning.Server, facts: dict, workdir: Path) -> dict:
    """gangway's operations for `server`, as data pyinfra_deploy.py turns into pyinfra operations."""
    out = {"packages": list(defaults.PACKAGES), "files": [], "directories": [], "links": [], "absent": [],
           "users": [{"name": server.inventory.deploy_user, "system": False,
                      "home": f"/home/{server.inventory.deploy_user}", "shell": "/bin/bash"},
                     {"name": server.inventory.app.name, "system": True, "home": server.layout.root,
                      "shell": "/usr/sbin/nologin"}],
           "services": ["nginx", "postgresql", "nftables", "certbot.timer", "systemd-timesyncd"]}
    seen = set()
    for step in provisioning.steps(server):
        for op in step.operations:
            if isinstance(op, File) and op.path not in seen:
                seen.add(op.path)
                local = workdir / f"file{len(out['files'])}"
                local.write_bytes(op.wanted(facts))
                out["files"].append({"path": op.path, "src": str(local), "mode": op.mode, "owner": op.owner,
                                     "group": op.group})
            elif isinstance(op, Directory):
                out["directories"].append({"path": op.path, "mode": op.mode, "owner": op.owner, "group": op.group})
            elif isinstance(op, Link):
                out["links"].append({"path": op.path, "target": op.target})
            elif isinstance(op, Absent):
                out["absent"].append(op.path)
    return out


def run(address: str, user: str, key: Path, spec_file: Path) -> float:
    """One pyinfra run; returns its wall time."""
    started = time.monotonic()
    result = subprocess.run([str(ensure_pyinfra()), address, str(DEPLOY), "--ssh-user", user, "--ssh-key", str(key),
                             "--sudo", "-y", "--data", "ssh_known_hosts_file=/dev/null",
                             "--data", "ssh_strict_host_key_checking=off"],
                            env={"GANGWAY_PEER_SPEC": str(spec_file), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"pyinfra failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds
