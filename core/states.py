"""Task states, named as Celery names them so results and events interoperate."""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
#: How a run that raised Celery's ``Ignore`` ends: nothing is stored, as in Celery.
IGNORED = "IGNORED"

ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, REJECTED})
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, REJECTED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED, REJECTED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED, REJECTED})
