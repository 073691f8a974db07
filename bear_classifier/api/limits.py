"""What one request, one address and the whole server may ask of the API: the deployer's limits, and the
per-address rate."""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

from .. import environment

ADDRESSES_KEPT = 10_000  # addresses remembered at once: a flood of made-up addresses can't grow the server


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """What one request, one address and the whole server may ask of the API (environment.py's BEAR_API_*)."""

    max_bytes: int = 20 * 2**20
    max_images: int = 8
    per_minute: int = 120  # per client address; 0: no limit
    concurrent: int = 0  # requests classified at once; 0: one per core
    queue: int = 64  # requests waiting for a turn, beyond which a request is refused at once
    wait_seconds: float = 10.0  # the longest a request waits for its turn
    body_seconds: float = 60.0  # a request's body must arrive whole within this: a slow one holds a connection, never a turn
    token: str = ""  # the bearer token every request must carry; "": none needed
    cors: tuple[str, ...] = ()  # origins whose pages may call the API; "*": any

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(max_bytes=int(environment.api_max_mb() * 2**20), max_images=environment.api_max_images(),
                   per_minute=environment.api_per_minute(), concurrent=environment.api_concurrent(),
                   queue=environment.api_queue(), wait_seconds=environment.api_wait_seconds(),
                   body_seconds=environment.api_body_seconds(),
                   token=environment.api_token(), cors=tuple(environment.api_cors_origins()))

    @property
    def turns(self) -> int:
        return self.concurrent or cores()

    @property
    def buffer_bytes(self) -> int:
        """The request bodies the server holds at once, all together: four of the largest (80 MB by default)."""
        return 4 * self.max_bytes


class PerMinute:
    """A token bucket per client address: `per_minute` requests, refilled evenly over each minute."""

    def __init__(self, per_minute: int):
        self.per_minute, self.rate = per_minute, per_minute / 60
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens left, when counted)
        self._lock = threading.Lock()

    def take(self, address: str) -> int:
        """0 if `address` may make a request now (and count it), else the seconds until it may."""
        if self.per_minute <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.pop(address, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - then) * self.rate)
            wait = 0 if tokens >= 1 else math.ceil((1 - tokens) / self.rate)
            self._buckets[address] = (tokens - 1 if wait == 0 else tokens, now)  # newest last: oldest dropped first
            while len(self._buckets) > ADDRESSES_KEPT:
                self._buckets.pop(next(iter(self._buckets)))
            return wait
