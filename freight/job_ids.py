"""A job named by the start of its id, as git takes a commit's: `freight logs 0d6c` is the one
job of yours whose id starts with 0d6c. The API lists the jobs whose id starts with it
(`GET /jobs?id_prefix=`), however old; at most SEARCHED_JOBS of them are looked at."""

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
PREFIX = re.compile(r"^[0-9a-f-]{1,36}$")


class AmbiguousJobId(Exception):
    """The prefix matches more than one job (the message lists some)."""


class UnknownJobId(Exception):
    """No job of the caller's starts with the prefix."""


def is_full_id(text: str) -> bool:
    return bool(FULL_ID.match(text.lower()))


def prefix_of(text: str) -> str:
    """What to look for: a job id's start, lowercase; AmbiguousJobId if too short to name one,
    UnknownJobId if no job id could start with it."""
    if len(text) < MIN_PREFIX:
        raise AmbiguousJobId(f"job id {text!r} is too short: give at least {MIN_PREFIX} characters")
    prefix = text.lower()
    if not PREFIX.match(prefix):
        raise UnknownJobId(f"no job has an id starting with {text!r}: ids are hexadecimal")
    return prefix


def resolve_job_id(text: str, jobs: Iterable[Job]) -> str:
    """The id of the one job in `jobs` (newest first: those the API found by the prefix, or
    any) whose id starts with `text`."""
    if is_full_id(text):
        return text
    prefix = prefix_of(text)
    matches = [
        job for job in itertools.islice(jobs, SEARCHED_JOBS) if job.job_id.startswith(prefix)
    ]
    if not matches:
        raise UnknownJobId(f"no job of yours has an id starting with {text!r}")
    if len(matches) > 1:
        shown = "\n".join(f"  {job.job_id}  {job.status}" for job in matches[:SHOWN_CANDIDATES])
        more = len(matches) - SHOWN_CANDIDATES
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise AmbiguousJobId(
            f"job id {text!r} is ambiguous: {len(matches)} jobs start with it:\n{shown}{tail}"
        )
    return matches[0].job_id
