"""Random events and replies (control characters, markup, huge and wrong-typed fields) thrown at
the event intake, the console's views, ``events --dump``, ``status`` and the reply printer: no
crash, no raw escape sequence in what reaches the terminal, memory bounded."""

from __future__ import annotations

import asyncio
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console as RichConsole

from qtui.core import App
from qtui.core.control import Replies
from qtui.core.eventcheck import TEXT_FIELDS
from qtui.core.protocol import json_loads
from qtui.core.queues import QueueInfo
from qtui.tui.commands import _show_status, format_event, show_replies
from qtui.tui.feed import Feed
from qtui.tui.views.details import TaskDetailScreen

from .console_data import FixedConsole
from .test_untrusted_text import _OWN_SEQUENCES, assert_no_injected_sequence

#: kombu's typed JSON values, each as a field's whole value: a datetime, a Decimal, a UUID, bytes.
TYPED_JSON = [json.dumps({"__type__": kind, "__value__": value}) for kind, value in (
    ("datetime", "2030-01-02T03:04:05"), ("date", "2030-01-02"), ("time", "03:04:05"),
    ("decimal", "1e999999"), ("decimal", "NaN"), ("uuid", {"hex": "a" * 32}),
    ("bytes", "\x1b[2J"), ("base64", "G1sySg=="))]
NASTY = ["\x1b[2J", "\x1b]52;c;b3duZWQ=\x07", "\x07", "\x9b31m", "\u202e", "[/]", "[b]",
         "[@click=app.screenshot]", " [@click=app.quit]x[/]", "[ url=http://x]", "\n", "\r"]
text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=8)), max_size=6).map("".join)
value = st.one_of(
    text, st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=3),
    st.dictionaries(text, st.integers(), max_size=2), st.just("x" * 50_000),
    st.builds(json_loads, st.sampled_from(TYPED_JSON)))  # what kombu's typed values decode to
TYPES = ["task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
         "task-retried", "task-revoked", "task-rejected", "worker-online", "worker-heartbeat",
         "worker-offline"]
FIELDS = ["uuid", "hostname", "timestamp", "clock", "pid", "name", "args", "kwargs", "result",
          "exception", "traceback", "runtime", "retries", "eta", "queue", "freq", "active",
          "processed", "loadavg", "sw_ident", "local_received", "utcoffset"]
event = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(TYPES), value),
     "uuid": st.one_of(st.sampled_from(["a1", "f2-[/]", "e3\x1b"]), value),
     "hostname": st.one_of(st.sampled_from(["w1", "w\x1b]52;c;eA==\x07"]), text, value),
     "timestamp": st.one_of(st.floats(1e9, 2e9), value)},
    optional={name: value for name in FIELDS if name not in ("uuid", "hostname", "timestamp")})
events = st.lists(event, max_size=40)

MAX_FIELD = 200
FUZZ = settings(deadline=None, max_examples=40,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def no_raw_controls(output: str) -> None:
    leftover = _OWN_SEQUENCES.sub("", output)
    assert "\x1b" not in leftover and "\x07" not in leftover and "\x9b" not in leftover


def fed(batch: list[dict]) -> Feed:
    feed = Feed(App("fuzz", broker="redis://127.0.0.1:6379/15", console_max_tasks=30,
                    console_max_workers=10, console_max_field=MAX_FIELD))
    feed.state.ingest(batch)
    return feed


@FUZZ
@given(events)
def test_random_events_never_break_the_state_and_stay_bounded(batch):
    feed = fed([dict(e) for e in batch])
    state = feed.state
    assert len(state) <= 30 and len(state.workers) <= 10
    for task in state.tasks():
        for name in TEXT_FIELDS:
            assert len(getattr(task, name) or "") <= MAX_FIELD + 30
    with feed.lock:
        snapshot = feed.snapshot()
    assert len(snapshot.tasks) == len(state)
    for raw in batch:
        no_raw_controls(format_event(raw))


@FUZZ
@given(st.dictionaries(text, value, max_size=4), st.lists(text, max_size=3))
def test_random_replies_and_names_print_no_raw_controls(replies, names):
    out = io.StringIO()
    rich = RichConsole(file=out, force_terminal=True, width=120, soft_wrap=True)
    show_replies(rich, "stats", Replies([{h: r} for h, r in replies.items()]))
    show_replies(rich, "active", Replies([{h: [{"id": r, "name": h, "args": r}]}
                                          for h, r in replies.items()]))
    app = App("fuzz", broker="redis://127.0.0.1:6379/15")
    import qtui.tui.commands as commands
    saved = commands._out
    commands._out = lambda: rich
    try:
        _show_status(app, None, names, [QueueInfo(n, 1, 0, 1) for n in names],
                     {n: names for n in names})
    finally:
        commands._out = saved
    no_raw_controls(out.getvalue())


item = st.one_of(value, st.fixed_dictionaries({}, optional={
    "id": value, "name": value, "args": value, "kwargs": value, "time_start": value,
    "eta": value, "exchange": value, "routing_key": value,
    "request": st.one_of(value, st.fixed_dictionaries({}, optional={
        "id": value, "name": value, "time_start": value}))}))


@settings(FUZZ, max_examples=20)
@given(st.dictionaries(text, st.lists(item, max_size=3), max_size=3))
def test_task_and_queue_tables_take_replies_of_any_shape(replies):
    out = io.StringIO()
    rich = RichConsole(file=out, force_terminal=True, width=120, soft_wrap=True)
    for command in ("active", "scheduled", "reserved", "active_queues"):
        show_replies(rich, command, Replies([{h: r} for h, r in replies.items()]))
    no_raw_controls(out.getvalue())


@settings(FUZZ, max_examples=2)
@given(events.filter(lambda b: len(b) > 5))
def test_random_events_render_in_every_view_without_raw_controls(batch):
    feed = fed([dict(e) for e in batch])
    with feed.lock:
        snapshot = feed.snapshot()
    console = FixedConsole(snapshot=snapshot)

    async def visit() -> None:
        async with console.run_test(size=(120, 30)) as pilot:
            for key in "123":  # queues come from the broker's polls, not from events
                await pilot.press(key)
                await pilot.pause()
                assert_no_injected_sequence(console)
            if snapshot.tasks:
                console.push_screen(TaskDetailScreen(snapshot.tasks[-1].id))
                await pilot.pause()
                assert_no_injected_sequence(console)
    asyncio.run(visit())
