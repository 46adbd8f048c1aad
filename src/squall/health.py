"""Endpoint health: which endpoints refuse connections, how long each rests, who probes it.

An endpoint that refuses a connection rests (1, 2, 4 ... up to 60 s per outage in a row);
when the rest ends, one request probes it and the others wait for that answer rather than
each spending a try on a connection that will likely be refused again. Any HTTP answer ends
the outage. Once every endpoint with a live key has been down for `unreachable_after_s`, the
run stops: waiting longer would only hold it open.

An endpoint that has never answered in this run gets no such patience: when no endpoint has
answered yet and each has refused `FIRST_CONTACT_REFUSALS` connections in a row (a few
seconds, with the rests above), the URL is most likely mistyped or the server not started,
and the run stops with a message naming the URLs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from .errors import RunStopped

_REST_MAX_S = 60.0
FIRST_CONTACT_REFUSALS = 3
"""Refusals in a row (at 0, 1 and 3 s) after which a never-answered endpoint is given up."""


class EndpointHealth:
    """The rests, probes and outages of every endpoint in a pool."""

    def __init__(
        self,
        notify: Callable[[str], None],
        *,
        unreachable_after_s: float = 300.0,
        urls: Mapping[str, str] | None = None,
    ) -> None:
        self._notify = notify
        self._unreachable_after_s = unreachable_after_s
        self._urls = dict(urls or {})
        self._ever_answered: set[str] = set()
        self._rest_until: dict[str, float] = {}
        self._rest_began: dict[str, float] = {}
        self._streak: dict[str, int] = {}
        self._probing: set[str] = set()
        self._down_since: dict[str, float] = {}  # first refusal of an outage not yet over

    def rest_until(self, endpoint: str) -> float:
        """Return when `endpoint` may take a request again (inf while its probe is out)."""
        if endpoint in self._probing:
            return math.inf
        return self._rest_until.get(endpoint, 0.0)

    def resting(self, endpoint: str, now: float) -> bool:
        """True while `endpoint` rests after refused connections."""
        return self._rest_until.get(endpoint, 0.0) > now

    def start_probe(self, endpoint: str) -> bool:
        """Called as a request leaves: True (and the endpoint is held) when it is a probe."""
        if endpoint in self._streak:
            self._probing.add(endpoint)
            return True
        return False

    def end_probe(self, endpoint: str) -> None:
        """The probe came back, whatever it says: the others may go again."""
        self._probing.discard(endpoint)

    def answered(self, endpoint: str) -> None:
        """An endpoint answered (any HTTP status): its outage, if any, is over."""
        self._streak.pop(endpoint, None)
        self._down_since.pop(endpoint, None)
        self._ever_answered.add(endpoint)

    def refused(self, endpoint: str, now: float, started: float) -> None:
        """A connection to `endpoint` (for a request sent at `started`) was refused."""
        if started <= self._rest_began.get(endpoint, -math.inf):
            # Sent before the current rest began: the same outage, already counted. Counting
            # each refused request in flight would stretch one outage's rest to the maximum.
            return
        streak = self._streak.get(endpoint, 0) + 1
        self._streak[endpoint] = streak
        self._down_since.setdefault(endpoint, now)
        until = now + min(_REST_MAX_S, 2 ** (streak - 1))
        if until > self._rest_until.get(endpoint, 0.0):
            self._rest_until[endpoint] = until
            self._rest_began[endpoint] = now
            self._notify(f"endpoint {endpoint} refuses connections: resting it {until - now:.0f}s")

    def check_reachable(self, live_endpoints: Iterable[str], now: float) -> None:
        """Raise RunStopped when no endpoint in `live_endpoints` can be reached.

        That is: every one has refused connections for `unreachable_after_s`, or none has
        answered in this run and each has refused `FIRST_CONTACT_REFUSALS` in a row.
        """
        endpoints = set(live_endpoints)
        if (
            endpoints
            and not endpoints & self._ever_answered
            and all(self._streak.get(ep, 0) >= FIRST_CONTACT_REFUSALS for ep in endpoints)
        ):
            where = ", ".join(f"{ep} ({self._urls.get(ep, '?')})" for ep in sorted(endpoints))
            raise RunStopped(
                f"cannot connect to {where}: refused {FIRST_CONTACT_REFUSALS} times in a row "
                "and never answered in this run; check base_url (host, port, /v1) and that "
                "the server is running, then rerun to resume"
            )
        since = [self._down_since.get(ep) for ep in endpoints]
        if endpoints and all(t is not None and now - t >= self._unreachable_after_s for t in since):
            raise RunStopped(
                f"no endpoint reachable for {self._unreachable_after_s:.0f}s: "
                f"{', '.join(sorted(endpoints))} refuse connections; start the server "
                "(or check base_url) and rerun to resume"
            )
