"""What every backend that joins chords does once a chord's header is complete.

The header's ``(task_id, state, result)`` entries, in header order, become the body's one
argument; a failed or revoked entry fails the body instead, with Celery's
``ChordError("Dependency <id> raised <exc>")``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import states
from ..exceptions import ChordError
from .base import exception_from_meta

if TYPE_CHECKING:
    from ..protocol import TaskMessage
    from .base import ResultBackend

logger = logging.getLogger("qtui.backend")

Send = Callable[..., Any]
"""How the body is sent: ``send(app, body, args, **options)``, as :func:`..canvas.apply` (the
default) takes them; a worker passes its own, which waits out the broker refusing writes."""


def header_results(entries: Iterable[tuple[str, str, Any]]) -> list[Any]:
    """The results to pass to the body; ChordError for the first part that did not succeed."""
    results = []
    for task_id, state, value in entries:
        if state in states.PROPAGATE_STATES:
            raise ChordError(f"Dependency {task_id} raised {exception_from_meta(value)!r}")
        results.append(value)
    return results


def fail_body(backend: ResultBackend, message: TaskMessage, error: ChordError) -> None:
    """Store the chord's failure as its body's result, so waiting on the chord ends."""
    logger.error("Chord %s failed: %s", message.group, error)
    body = message.chord
    body_id = (body.get("options") or {}).get("task_id") if isinstance(body, dict) else None
    if body_id:
        backend.store_result(body_id, error, states.FAILURE)


def send_body(backend: ResultBackend, message: TaskMessage, results: list[Any],
              send: Send | None = None) -> None:
    """Send the body as the header part that completed the chord sends it on a Celery worker
    (``callback.delay`` inside that task): that part is its parent, and its root is the part's
    root, unless the body was frozen with its own. A worker's ``send`` sends it again while the
    broker refuses writes for a while (until its shutdown grace ends). A body that cannot be
    sent (one qtui cannot apply, the broker failing for good) fails the chord with Celery's
    ``ChordError("Callback error: ...")``: the join is over, nothing would send it later, and
    waiting on it ends."""
    from ..canvas import apply

    body = message.chord
    frozen = (body.get("options") or {}) if isinstance(body, dict) else {}
    family = {"parent_id": message.id, "root_id": message.root_id or message.id}
    options: dict[str, Any] = {name: value for name, value in family.items()
                               if not frozen.get(name)}
    try:
        if send is None:
            apply(backend.app, body, (results,), None, **options)
        else:
            send(backend.app, body, (results,), **options)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the body is not sent: say so
        fail_body(backend, message, ChordError(f"Callback error: {exc!r}"))
