"""A bounded HTTP(S) load against a test server, recording every request: when it started and ended, and what
answered. Used to prove that a deploy or rollback drops no request and that, once the command returns, only
the new release answers. Traffic goes only to the test server's address; every loop is bounded in count and
time and stops by itself."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tests.outside import http_get, https_get

MAX_SECONDS = 120
MAX_REQUESTS = 50_000


@dataclass
class Sample:
    started: float
    ended: float
    status: int | None
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Load:
    address: str
    name: str
    cafile: object  # None: plain HTTP
    path: str = "/version/"
    workers: int = 4
    max_seconds: float = MAX_SECONDS
    max_requests: int = MAX_REQUESTS
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]

    def _worker(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.samples) >= self.max_requests:
                    return
            started = time.monotonic()
            try:
                response = (https_get(self.address, self.name, self.cafile, self.path, timeout=15)
                            if self.cafile is not None else http_get(self.address, self.name, self.path, timeout=15))
                sample = Sample(started, time.monotonic(), response.status, response.body.strip())
            except Exception as error:  # a failed request is what we are counting
                sample = Sample(started, time.monotonic(), None, "", f"{type(error).__name__}: {error}")
            with self._lock:
                self.samples.append(sample)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        time.sleep(0.3)  # traffic is flowing before the command under test starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def answered_after(self, moment: float) -> set[str]:
        """The bodies of requests that started after `moment` (a time.monotonic() value)."""
        return {s.body for s in self.samples if s.started >= moment and s.ok}

    def worst_latency(self) -> float:
        return max((s.ended - s.started for s in self.samples), default=0.0)
