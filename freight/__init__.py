"""Freight: run GPU jobs in containers over REST. `freight.Client` is the Python SDK.

The names below are imported on first use, so that what imports one part of the package (the
services import `freight.jobspec`) does not pay for the HTTP clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what a type checker sees; at run time, __getattr__ below
    from freight.client import Cancellation as Cancellation
    from freight.client import Client as Client
    from freight.errors import Conflict as Conflict
    from freight.errors import ConnectionFailed as ConnectionFailed
    from freight.errors import FreightError as FreightError
    from freight.errors import InvalidRequest as InvalidRequest
    from freight.errors import NotFound as NotFound
    from freight.errors import Unauthorized as Unauthorized
    from freight.errors import Unavailable as Unavailable
    from freight.errors import WaitTimedOut as WaitTimedOut
    from freight.models import Event as Event
    from freight.models import FileEntry as FileEntry
    from freight.models import Job as Job
    from freight.models import Submitted as Submitted

_FROM = {
    "Cancellation": "freight.client",
    "Client": "freight.client",
    "Conflict": "freight.errors",
    "ConnectionFailed": "freight.errors",
    "FreightError": "freight.errors",
    "InvalidRequest": "freight.errors",
    "NotFound": "freight.errors",
    "Unauthorized": "freight.errors",
    "Unavailable": "freight.errors",
    "WaitTimedOut": "freight.errors",
    "Event": "freight.models",
    "FileEntry": "freight.models",
    "Job": "freight.models",
    "Submitted": "freight.models",
}

__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'freight' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
