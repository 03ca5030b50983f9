"""Keep-alive HTTPS load from outside a test server with `wrk` (Debian package `wrk`), and its figures.

tests/load.py opens a new connection for every request, so it cannot see what a client with a kept-alive
connection sees when nginx reloads: old workers close idle connections while a request is already on its
way. wrk keeps its connections open and counts every failure: socket errors (connect, read, write,
timeout) and answers that are not 2xx or 3xx.

Name and certificate: wrk sends the URL's host as the TLS server name (SNI) and as the Host header, and
cannot be told another. With an IP address in the URL the server name would be that IP, which a server that
rejects handshakes for unknown names (nginx `ssl_reject_handshake on` in a default server) refuses, so the
URL must carry the real domain. The domain must then resolve to the test server, without touching the
host's /etc/hosts: wrk runs in a mount namespace of its own (`unshare --mount`) where a private hosts file
is bind-mounted over /etc/hosts; nothing outside that namespace sees it. (wrk does not verify certificates;
the other tests check the chain with tests/outside.py.)

Traffic goes only to the test server's address; every run is bounded by wrk's own duration and stops by
itself, or earlier on `stop()`.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_SECONDS = 120

# Counts the answers by status and body, so that a test sees which releases answered during the load.
SCRIPT = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  answers = {}
end

function response(status, headers, body)
  local key = status .. "\t" .. string.gsub(body or "", "%s+$", "")
  answers[key] = (answers[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("answers")) do
      total[key] = (total[key] or 0) + count
    end
  end
  for key, count in pairs(total) do
    io.write("answer\t" .. count .. "\t" .. key .. "\n")
  end
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


@dataclass
class WrkResult:
    """wrk's summary: every request it completed and every kind of failure it counted."""

    output: str
    requests: int = 0
    seconds: float = 0.0
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0
    non_2xx_3xx: int = 0
    latency_ms: dict = field(default_factory=dict)  # "50%", "99%", "max" -> milliseconds
    answers: dict = field(default_factory=dict)  # (status, body) -> count

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        result = cls(output)
        m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output, re.M)
        if not m:
            raise ValueError(f"no summary in wrk's output:\n{output}")
        result.requests, result.seconds = int(m.group(1)), _ms(m.group(2) + m.group(3)) / 1e3
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
        if m:
            result.connect, result.read, result.write, result.timeout = map(int, m.groups())
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        result.non_2xx_3xx = int(m.group(1)) if m else 0
        m = re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", output, re.M)
        if m:
            result.latency_ms["max"] = _ms(m.group(1))
        for pct, value in re.findall(r"^\s*(\d+)%\s+(\S+)\s*$", output, re.M):
            result.latency_ms[f"{pct}%"] = _ms(value)
        for count, status, body in re.findall(r"^answer\t(\d+)\t(\d+)\t(.*)$", output, re.M):
            result.answers[(int(status), body)] = result.answers.get((int(status), body), 0) + int(count)
        return result

    @property
    def errors(self) -> dict:
        return {"connect": self.connect, "read": self.read, "write": self.write, "timeout": self.timeout,
                "non-2xx/3xx": self.non_2xx_3xx}

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> str:
        latency = ", ".join(f"{k} {v:.0f} ms" for k, v in self.latency_ms.items() if k in ("50%", "99%", "max"))
        errors = ", ".join(f"{k} {v}" for k, v in self.errors.items())
        return (f"{self.requests} requests in {self.seconds:.1f} s ({self.requests / max(self.seconds, 1e-9):.0f}/s);"
                f" errors: {errors}; latency {latency}")


def require_wrk() -> None:
    missing = [tool for tool in ("wrk", "unshare", "mount") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: apt-get install wrk (or run `bash .ci/run` once)")


class Wrk:
    """``with Wrk(address, domain) as load: ...`` runs wrk for at most SECONDS; leaving the block (or
    ``stop()``) ends it early with SIGINT, after which wrk prints its summary; ``load.result`` holds it."""

    def __init__(self, address: str, domain: str, path: str = "/version/", seconds: float = 60,
                 connections: int = 16, threads: int = 2, timeout: float = 10, count_answers: bool = True):
        require_wrk()
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"a wrk run is bounded: 0 < seconds <= {MAX_SECONDS}")
        self.address, self.domain, self.seconds = address, domain, seconds
        self._tmp = Path(tempfile.mkdtemp(prefix="gangway-wrk-"))
        hosts = self._tmp / "hosts"
        hosts.write_text(f"127.0.0.1\tlocalhost\n{address}\t{domain}\n")
        script = self._tmp / "answers.lua"
        script.write_text(SCRIPT)
        wrk = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", f"--timeout={int(timeout)}s",
               "--latency", *(["-s", str(script)] if count_answers else []), f"https://{domain}{path}"]
        self.argv = self._in_own_hosts(hosts, wrk)
        self._check_resolution(hosts)
        self.process: subprocess.Popen | None = None
        self.result: WrkResult | None = None
        self.started = self.ended = 0.0

    @staticmethod
    def _in_own_hosts(hosts: Path, argv: list[str]) -> list[str]:
        """ARGV run in its own mount namespace, where HOSTS is its /etc/hosts (private propagation: the
        bind mount never reaches the host's namespace)."""
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *argv]

    def _check_resolution(self, hosts: Path) -> None:
        done = subprocess.run(self._in_own_hosts(hosts, ["getent", "hosts", self.domain]), capture_output=True,
                              text=True, timeout=10)
        if done.returncode != 0 or done.stdout.split()[:1] != [self.address]:
            raise RuntimeError(f"{self.domain} does not resolve to {self.address} in wrk's namespace "
                               f"(does nsswitch.conf read files for hosts?): {done.stdout}{done.stderr}")

    def __enter__(self) -> Wrk:
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)  # connections are open and busy before the command under test starts
        if self.process.poll() is not None:
            out = self.process.communicate()[0]
            raise RuntimeError(f"wrk exited at once ({self.process.returncode}): {out}")
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> WrkResult:
        """End the load now (SIGINT: wrk stops and prints its summary) and parse it."""
        if self.result is not None or self.process is None:
            return self.result
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)  # exec'd: this pid is wrk itself
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
            raise RuntimeError(f"wrk did not stop on SIGINT:\n{out}") from None
        finally:
            self.ended = time.monotonic()
            shutil.rmtree(self._tmp, ignore_errors=True)
        self.result = WrkResult.parse(out)
        return self.result
