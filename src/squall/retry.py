"""What to do after a failed request: try again (when, and counted against which budget) or record.

`RetryPolicy.decide` only computes; the engine does the waiting with its Clock.

- 429 says "wait", not "broken": it has a budget of its own (`max_rate_limited`) and no delay
  of the row's own, because the key that answered is cooled down and another key may take
  the row at once.
- 401/403 says the *key* is bad, not the row: the row goes to another key at once, and the
  pool stops the run cleanly if no key is left.
- A refused connection says the *endpoint* is down, not the row: the pool rests the endpoint
  and probes it later, so, like a 429, it counts against the 429 budget with no delay of the
  row's own (another endpoint may take the row at once).
- 5xx, timeouts, resets and unparseable bodies use the fault budget (`max_attempts`) with
  jittered exponential backoff.
- 400/404/422 and content filtering would fail again: recorded at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import RetryConfig
from .errors import (
    AuthError,
    ConnectionLost,
    FatalRequestError,
    RateLimited,
    RequestError,
    RetryableError,
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer: retry after `delay` seconds, or give up."""

    retry: bool
    delay: float = 0.0


@dataclass(slots=True)
class Attempts:
    """A row's tries so far, by budget."""

    total: int = 0
    faults: int = 0
    rate_limited: int = 0


class RetryPolicy:
    """Decide, from an error and a row's attempts so far, whether and when to try again."""

    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self._cfg = config
        self._rng = rng or random.Random()

    def backoff(self, faults: int) -> float:
        """Return the delay before the next try after `faults` faults (equal jitter)."""
        ceiling = min(self._cfg.backoff_max_s, self._cfg.backoff_base_s * 2.0 ** max(0, faults - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def decide(self, error: RequestError, attempts: Attempts) -> Decision:
        """Count `error` into `attempts` and return whether and when to try the row again."""
        if isinstance(error, RateLimited) or (isinstance(error, ConnectionLost) and error.refused):
            attempts.rate_limited += 1
            return Decision(attempts.rate_limited < self._cfg.max_rate_limited)
        if isinstance(error, AuthError):
            # The key leaves the pool; the row is not at fault.
            return Decision(True)
        if isinstance(error, FatalRequestError):
            return Decision(False)
        if isinstance(error, RetryableError):
            attempts.faults += 1
            if attempts.faults >= self._cfg.max_attempts:
                return Decision(False)
            return Decision(True, self.backoff(attempts.faults))
        return Decision(False)
