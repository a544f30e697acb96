"""Users' quotas, from the tokens file to the log.

An operator sets a user's quota in the tokens file (`freight token quota NAME --max-gpus 2`);
the scheduler must see it in the log, so that placement stays a function of the log. The API's
projector (one per database) watches the file and appends an `OwnerQuotaSet` for every user
whose quota it has not yet announced as it now is: all of them when it starts (a repeat changes
nothing), then each one that changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from freight_server.services.api.jobs import EventLog
from freight_server.shared.bus import BrokerUnavailable
from freight_server.shared.events import EventFactory, EventType
from freight_server.shared.tokens import Quotas, TokensFileError, read_quotas

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between looks at the file: as the API's tokens are reread


class QuotaAnnouncer:
    def __init__(
        self,
        path: Path | None,
        log_writer: EventLog,
        new_event: EventFactory,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._path = path
        self._log = log_writer
        self._new_event = new_event
        self._monotonic = monotonic
        self._next = 0.0
        self._seen: tuple[int, int] | None = None  # the file's (mtime_ns, size) announced
        self._told: Quotas = {}

    def run_if_due(self) -> None:
        if self._path is None or self._monotonic() < self._next:
            return
        self._next = self._monotonic() + CHECK_EVERY
        try:
            info = self._path.stat()
            version = (info.st_mtime_ns, info.st_size)
            if version == self._seen:
                return
            quotas = read_quotas(self._path)
        except (OSError, TokensFileError) as exc:
            log.warning("quotas not read from %s: %s", self._path, exc)
            return
        changed = {owner: q for owner, q in quotas.items() if self._told.get(owner) != q}
        events = [
            self._new_event(EventType.OWNER_QUOTA_SET, None, owner=owner, **quota)
            for owner, quota in sorted(changed.items())
        ]
        if events:
            try:
                self._log.append(*events)
            except BrokerUnavailable as exc:
                log.warning("quotas not announced: %s; retrying", exc)
                return
            log.info("announced the quotas of %s", ", ".join(sorted(changed)))
        self._told.update(changed)
        self._seen = version
