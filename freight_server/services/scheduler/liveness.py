"""Which runners are alive, judged by when the scheduler heard them, on its own clock.

A heartbeat's `occurred_at` is the runner's clock, which may be a minute off either way; so a
runner's silence is measured from when this scheduler applied its latest heartbeat (a monotonic
clock, immune to skew and to jumps of the wall clock). A heartbeat replayed from history after a
restart proves nothing about now and is not counted as heard.

The scheduler's own inattention is not a runner's silence: after a gap in its attention (a
database stall, a reconnect, a long batch) or while it is behind the log, heartbeats may be
waiting unread. Silence is then counted from when attention resumed, so every runner gets a
full deadline, and no one is judged at all while the scheduler is behind. The same holds for its
ears: while the heartbeats' subscription is down (a broker restart, a reconnect's backoff) no one
is judged, and silence counts from when it was taken up again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

# A pass is due every second: a longer pause means the scheduler was not reading the log.
ATTENTION_GAP = 2.0


class Liveness:
    def __init__(self, deadline: float, monotonic: Callable[[], float] = time.monotonic):
        self._deadline = deadline
        self._monotonic = monotonic
        self._heard: dict[str, float] = {}
        # Silence is never counted from before this moment: the start, or the last resumption.
        self._attentive_since = monotonic()
        self._last_look = self._attentive_since
        self._behind = False
        self._listening_since: float | None = self._attentive_since

    def heard(self, runner_id: str) -> None:
        """A heartbeat of `runner_id` was applied just now, live (not replayed)."""
        self._heard[runner_id] = self._monotonic()

    def behind(self, behind: bool) -> None:
        """Whether the last batch read left more of the log waiting (the consumer's view)."""
        self._behind = behind

    def listening(self, since: float | None) -> None:
        """Since when (this clock) heartbeats can be heard; None while they cannot."""
        self._listening_since = since

    def look(self) -> None:
        """Called at every pass: a pass after a long pause restarts every runner's deadline."""
        now = self._monotonic()
        if now - self._last_look > ATTENTION_GAP:
            self._attentive_since = now
        self._last_look = now

    def can_take_work(self, runner_id: str) -> bool:
        """Heard live within the deadline: placement may count on it."""
        heard = self._heard.get(runner_id)
        return heard is not None and self._monotonic() - heard <= self._deadline

    def silent(self, runner_ids: Iterable[str]) -> list[str]:
        """Those of `runner_ids` silent past the deadline; none while the scheduler is behind
        or deaf. Attention is looked at again first: a pass that stalled after its start (its
        own database waits, in the fault suite while it heard heartbeats) is a gap too."""
        self.look()
        if self._behind or self._listening_since is None:
            return []
        now = self._monotonic()
        since = max(self._attentive_since, self._listening_since)
        return [
            runner_id
            for runner_id in runner_ids
            if now - max(self._heard.get(runner_id, float("-inf")), since) > self._deadline
        ]

    def settled(self) -> bool:
        """A full deadline has passed since attention began: a runner not heard from by now
        is not merely yet to speak."""
        return self._monotonic() - self._attentive_since > self._deadline
