"""A small, bounded HTTP load generator for benchmarks and zero-downtime tests.

Only loopback and link-local (sandbox fleet) addresses are accepted, and every run is bounded in
request count and time, so it can never be pointed at a real service by mistake.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int = 0
    failed: int = 0
    worst_latency_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


class Load:
    """GET `url` every `interval` seconds in a thread until stopped (or the bounds are hit)."""

    def __init__(self, url: str, interval: float = 0.01, max_requests: int = 20_000, max_seconds: float = 300):
        host = urlsplit(url).hostname or ""
        ip = ipaddress.ip_address(host)
        if not (ip.is_loopback or ip.is_link_local):
            raise ValueError(f"load is only sent to loopback or sandbox (link-local) addresses, not {host}")
        self.url, self.interval = url, interval
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        r = self.result
        while not self._stop.is_set() and r.requests < self.max_requests and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    resp.read()
                ok, why = resp.status == 200, f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                ok, why = False, f"HTTP {e.code}"
            except (OSError, ValueError) as e:
                ok, why = False, type(getattr(e, "reason", e)).__name__
            r.requests += 1
            r.worst_latency_ms = max(r.worst_latency_ms, (time.monotonic() - t0) * 1000)
            if not ok:
                r.failed += 1
                r.errors[why] = r.errors.get(why, 0) + 1
            time.sleep(self.interval)

    def __enter__(self) -> Load:
        self._thread.start()
        time.sleep(0.3)  # some requests before the operation starts
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # and some after it ends
        self._stop.set()
        self._thread.join()
