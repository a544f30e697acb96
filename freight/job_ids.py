"""A job named by the start of its id, as git takes a commit's: `freight logs 0d6c` is the one
job of yours whose id starts with 0d6c. The API has no prefix search, so the newest jobs are
listed (every status, newest first) up to SEARCHED_JOBS; an older job needs its whole id."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from freight.models import Job

MIN_PREFIX = 4
SEARCHED_JOBS = 5000
PAGE_SIZE = 1000
SHOWN_CANDIDATES = 5
FULL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class AmbiguousJobId(Exception):
    """The prefix matches more than one job (the message lists some)."""


class UnknownJobId(Exception):
    """No job of the caller's newest SEARCHED_JOBS starts with the prefix."""


def is_full_id(text: str) -> bool:
    return bool(FULL_ID.match(text.lower()))


def resolve_job_id(text: str, jobs: Iterable[Job]) -> str:
    """The id of the one job in `jobs` (newest first) whose id starts with `text`."""
    if is_full_id(text):
        return text
    if len(text) < MIN_PREFIX:
        raise AmbiguousJobId(f"job id {text!r} is too short: give at least {MIN_PREFIX} characters")
    prefix = text.lower()
    matches = [
        job for job in itertools.islice(jobs, SEARCHED_JOBS) if job.job_id.startswith(prefix)
    ]
    if not matches:
        raise UnknownJobId(
            f"no job of yours has an id starting with {text!r} (among your {SEARCHED_JOBS} "
            "newest; give an older job's whole id)"
        )
    if len(matches) > 1:
        shown = "\n".join(f"  {job.job_id}  {job.status}" for job in matches[:SHOWN_CANDIDATES])
        more = len(matches) - SHOWN_CANDIDATES
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise AmbiguousJobId(
            f"job id {text!r} is ambiguous: {len(matches)} jobs start with it:\n{shown}{tail}"
        )
    return matches[0].job_id
