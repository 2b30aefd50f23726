"""Rate limits and retry timing for LLM calls: token buckets, exponential backoff with jitter, ``Retry-After``."""
from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field


class TokenBucket:
    """A token bucket refilled continuously at ``rate_per_minute``, holding at most ``capacity`` units.

    ``acquire(n)`` blocks until ``n`` units are available and takes them. A request larger than the capacity is
    allowed once the bucket is full (otherwise it could never run) and drives the level negative, so the following
    callers wait for the debt to be repaid: the long-run rate is still ``rate_per_minute``.

    Args:
      rate_per_minute: refill rate (requests or tokens per minute); ``None`` or ``<= 0`` disables the limit.
      capacity: burst size; defaults to one minute's worth.
      clock, sleep: injectable for tests.
    """

    def __init__(self, rate_per_minute: float | None, capacity: float | None = None, *, clock=time.monotonic,
                 sleep=time.sleep):
        self.rate = float(rate_per_minute or 0.0) / 60.0
        self.capacity = float(capacity if capacity is not None else (rate_per_minute or 0.0))
        self._level = self.capacity
        self._clock, self._sleep = clock, sleep
        self._t = clock()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._t) * self.rate)
        self._t = now

    def acquire(self, n: float = 1.0) -> float:
        """Take ``n`` units, blocking as needed; returns the seconds waited."""
        if not self.enabled:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                need = min(n, self.capacity)
                if self._level >= need:
                    self._level -= n
                    return waited
                delay = (need - self._level) / self.rate
            self._sleep(delay)
            waited += delay

    def debit(self, n: float) -> None:
        """Charge ``n`` more units after the fact (e.g. actual tokens beyond the estimate)."""
        if self.enabled and n:
            with self._lock:
                self._refill()
                self._level -= n


@dataclass
class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits, as two token buckets."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    requests: TokenBucket = field(init=False)
    tokens: TokenBucket = field(init=False)

    def __post_init__(self):
        self.requests = TokenBucket(self.requests_per_minute)
        self.tokens = TokenBucket(self.tokens_per_minute)

    def acquire(self, estimated_tokens: int) -> float:
        return self.requests.acquire(1) + self.tokens.acquire(estimated_tokens)

    def settle(self, estimated_tokens: int, actual_tokens: int | None) -> None:
        if actual_tokens is not None and actual_tokens > estimated_tokens:
            self.tokens.debit(actual_tokens - estimated_tokens)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (decimals accepted) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """"Full jitter" exponential backoff: uniform in ``[0, min(cap, base * 2**attempt)]``.

    Jitter keeps many workers that failed together from retrying together (AWS architecture blog, "Exponential
    Backoff And Jitter", 2015). ``attempt`` counts from 0 for the first retry.
    """
    r = rng.random() if rng is not None else random.random()
    return r * min(cap, base * (2.0 ** attempt))
