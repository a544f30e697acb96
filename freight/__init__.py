"""Freight: run GPU jobs in containers over REST. `freight.Client` is the Python SDK."""

from freight.client import Cancellation, Client
from freight.errors import (
    Conflict,
    ConnectionFailed,
    FreightError,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
    WaitTimedOut,
)
from freight.models import Event, FileEntry, Job, Submitted

__all__ = [
    "Cancellation",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Event",
    "FileEntry",
    "FreightError",
    "InvalidRequest",
    "Job",
    "NotFound",
    "Submitted",
    "Unauthorized",
    "Unavailable",
    "WaitTimedOut",
]
