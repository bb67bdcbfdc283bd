"""Canvas signatures read back from the dicts that messages carry."""

from __future__ import annotations

import json
import weakref

import pytest

from qtui.core import App
from qtui.core.canvas import Signature, chunks


def test_a_chunks_signature_read_from_its_message_dict_keeps_its_task_as_a_signature() -> None:
    app = App("canvas-signatures", broker="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    carried = json.loads(json.dumps(chunks(add.s(), [(1, 2), (3, 4)], 1)))
    restored = Signature.from_dict(carried)

    assert isinstance(restored, chunks)
    assert isinstance(restored["kwargs"]["task"], Signature)
    assert restored["kwargs"]["task"]["task"] == add.name
    assert json.loads(json.dumps(restored)) == carried


@pytest.mark.timeout(10)
def test_a_plain_signature_takes_extra_attributes_and_weak_references_as_celerys_does() -> None:
    app = App("canvas-signatures", broker="memory://")

    @app.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    sig = add.s(1)
    sig.custom = 1  # type: ignore[attr-defined]

    assert vars(sig) == {"custom": 1}
    assert weakref.ref(sig)() is sig


def test_every_send_option_of_a_task_is_one_a_signature_sends() -> None:
    from qtui.core.canvas import _PUBLISH_OPTIONS, _SEND_OPTIONS
    from qtui.core.task import SendOptions

    assert frozenset(SendOptions.__annotations__) == _SEND_OPTIONS | _PUBLISH_OPTIONS
