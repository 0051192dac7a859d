"""Rate limiting and retry timing shared by every client of an external service (Mapillary, chat completions).

One token bucket and one backoff rule, so that the image downloader and the captioner behave the same way under
pressure: bounded request rate, exponential backoff with full jitter, and the server's ``Retry-After`` honoured;
and one circuit breaker, so that a service that is down is not asked again and again for every item left.
"""

import asyncio
import email.utils
import logging
import random
import re
import time
from dataclasses import dataclass, field

__all__ = [
    "AsyncTokenBucket",
    "CircuitBreaker",
    "RetryPolicy",
    "install_query_redaction",
    "parse_retry_after",
    "redact",
]


class AsyncTokenBucket:
    """Allows ``rate`` tokens per second on average, with bursts up to ``capacity`` tokens.

    ``acquire(n)`` waits until ``n`` tokens are available; a request larger than the capacity waits for a full bucket
    and then drives the level negative, so one oversized request cannot stall forever (tokens/min limits with long
    prompts). Safe for many coroutines of one event loop.
    """

    def __init__(self, rate: float, capacity: float | None = None, *, clock=time.monotonic) -> None:
        if rate <= 0:
            msg = f"token bucket rate must be positive, got {rate}"
            raise ValueError(msg)
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(1.0, rate))
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, tokens: float = 1.0) -> None:
        needed = min(float(tokens), self.capacity)
        async with self._lock:
            while True:
                self._refill()
                # A tolerance, because float refills can stop a hair short of a whole token forever.
                if self._level >= needed - 1e-9:
                    self._level -= float(tokens)
                    return
                await asyncio.sleep((needed - self._level) / self.rate)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, never shorter than what the server asked for."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = f"max_attempts must be at least 1, got {self.max_attempts}"
            raise ValueError(msg)

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        delay = self.rng.uniform(ceiling / 2, ceiling)
        if retry_after_s is not None:
            # The server's Retry-After is a floor: waiting less just earns another 429.
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret replaced, for messages that may quote a URL or a header."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class _QueryRedaction(logging.Filter):
    """Replaces the value of one URL query parameter (a token) in every record of a logger by ``***``."""

    def __init__(self, param: str) -> None:
        super().__init__()
        self.param = param
        self.pattern = re.compile(rf"({re.escape(param)}=)[^&\s\"']+")

    def _clean(self, value: object) -> object:
        text = str(value)
        return self.pattern.sub(r"\1***", text) if f"{self.param}=" in text else value

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(arg) for arg in record.args)
        record.msg = self._clean(record.msg)
        return True


def install_query_redaction(logger: logging.Logger, param: str) -> None:
    """Blank the query parameter ``param`` in ``logger``'s records (once per logger and parameter), for clients
    whose library logs request URLs that carry a secret."""
    if not any(isinstance(f, _QueryRedaction) and f.param == param for f in logger.filters):
        logger.addFilter(_QueryRedaction(param))


class CircuitBreaker:
    """Stops calls to a service after ``threshold`` failed calls in a row, or at once on a fault that cannot heal.

    A successful call resets the count. Once open, the breaker stays open for the rest of the run (no half-open
    probing: a run is finite, and the next run starts with a closed breaker and retries what was left), and
    :attr:`reason` says why. Which outcomes count is the caller's choice: a rate limit (429) is the service
    working as agreed and should neither count nor reset.
    """

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            msg = f"circuit breaker threshold must be at least 1, got {threshold}"
            raise ValueError(msg)
        self.threshold = int(threshold)
        self.consecutive_failures = 0
        self.reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def success(self) -> None:
        """A call worked: the failure count starts again."""
        if not self.is_open:
            self.consecutive_failures = 0

    def failure(self, error: str) -> bool:
        """A call failed with ``error``; True when this failure opened the breaker."""
        self.consecutive_failures += 1
        if self.is_open or self.consecutive_failures < self.threshold:
            return False
        self.reason = f"{self.consecutive_failures} calls in a row failed (last: {error})"
        return True

    def trip(self, reason: str) -> bool:
        """Open now (a fault that retrying cannot fix, such as a rejected key); True when this call opened it."""
        if self.is_open:
            return False
        self.reason = reason
        return True
