"""Signatures and results pickle as Celery's do: a signature as its dict, a result as its id
(and parent); the app is left out, and the copy that comes back uses the current app. So they
pass through multiprocessing and the pickle serializer, into another process too."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

from qtui.core import App, chain, chord, current_app, group
from qtui.core.canvas import Signature
from qtui.core.result import AsyncResult, GroupResult

app = App("pickling", broker="memory://", backend="cache+memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


def test_a_signature_bound_to_an_app_pickles_as_its_dict():
    sig = add.s(2, 2).set(countdown=5)
    copy = pickle.loads(pickle.dumps(sig))
    assert type(copy) is Signature
    assert copy == sig
    assert copy.app is current_app()  # not the app it was bound to: that is not pickled


def test_a_chain_group_and_chord_come_back_as_themselves():
    for canvas in (chain(add.s(1, 1), add.s(2)), group(add.s(1, 1), add.s(2, 2)),
                   chord([add.s(1, 1), add.s(2, 2)], add.s(3))):
        copy = pickle.loads(pickle.dumps(canvas))
        assert type(copy) is type(canvas)
        assert copy == canvas


def test_an_async_result_pickles_as_its_id_name_and_parent():
    result = AsyncResult("child-id", app=app, task_name="tasks.add")
    result.parent = AsyncResult("parent-id", app=app)
    copy = pickle.loads(pickle.dumps(result))
    assert (copy.id, copy.name, copy.app) == ("child-id", "tasks.add", current_app())
    assert copy.parent is not None and copy.parent.id == "parent-id"


def test_a_group_result_pickles_with_its_results():
    result = GroupResult("group-id", [AsyncResult("a", app=app), AsyncResult("b", app=app)],
                         app=app)
    copy = pickle.loads(pickle.dumps(result))
    assert copy.id == "group-id" and [r.id for r in copy] == ["a", "b"]
    assert copy.app is current_app()


def test_a_pickled_signature_and_result_load_in_a_fresh_process_on_its_app():
    payload = pickle.dumps((add.s(2, 3), AsyncResult("task-id", app=app, task_name="t")))
    loader = textwrap.dedent("""
        import pickle, sys
        from qtui.core import App
        there = App("there", broker="memory://")
        sig, result = pickle.loads(sys.stdin.buffer.read())
        assert sig.app is there and result.app is there
        print(sig["task"], sig["args"], result.id, result.name)
    """)
    done = subprocess.run([sys.executable, "-c", loader], input=payload, capture_output=True,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [add.name, "(2,", "3)", "task-id", "t"]
