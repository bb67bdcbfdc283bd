"""Getting to a failure and reading it: the overview's recent failures open the task detail,
which shows the exception and traceback first (on screen at 80x24), a timeline to the
millisecond, the task's family as a tree to move along, copyable ids and text; and the worker
detail's inspect replies as tables. Driven with Pilot on the fixed cluster of console_data."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
from textual.widgets import DataTable, Static, TabbedContent, TextArea, Tree

from qtui.core.display import UNSHOWN
from qtui.core.state import State, timeline_steps
from qtui.tui.arguments import Arguments
from qtui.tui.history import History
from qtui.tui.model import ConsoleModel
from qtui.tui.views.details import TaskDetailScreen, WorkerDetailScreen, worker_table
from qtui.tui.views.tasks import TasksScreen
from qtui.tui.views.workers import WorkersScreen

from .console_data import SNAPSHOT, T0, TASKS, FixedConsole, changed, screen_text
from .still import settle

SMALL = (80, 24)
SIZE = (140, 36)

pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine

TRACEBACK = TASKS[3].traceback
FAILED = changed(TASKS[7], traceback=TRACEBACK.replace("order 4", "order 8"))
"""The newest failure, with a traceback: the first one the overview lists."""
INCIDENT = dataclasses.replace(SNAPSHOT, tasks=(*TASKS[:7], FAILED))


def family_tasks() -> tuple[Any, ...]:
    """A chain (root -> middle -> two children) and a task whose parent is gone."""
    def member(n: int, name: str, state: str, parent: str, **extra: Any) -> Any:
        return changed(TASKS[0], id=f"fam-{n}", name=name, state=state,
                                   root_id="fam-0", parent_id=parent, received=T0 + 20 + n,
                                   started=T0 + 20.01 + n, updated=T0 + 20.5 + n,
                                   timeline=(), **extra)
    return (member(0, "flow.start", "SUCCESS", ""),
            member(1, "flow.middle", "SUCCESS", "fam-0"),
            member(2, "flow.left", "FAILURE", "fam-1", exception="KeyError('x')",
                   traceback=TRACEBACK),
            member(3, "flow.right", "SUCCESS", "fam-1"),
            member(4, "flow.orphan", "SUCCESS", "fam-gone"))


FAMILY = dataclasses.replace(SNAPSHOT, tasks=(*TASKS, *family_tasks()))


class InspectedConsole(FixedConsole):
    """The fixed cluster whose workers answer inspect with Celery-shaped replies."""

    REPLIES: ClassVar[dict[str, Any]] = {
        "stats": {"pid": 4242, "uptime": 31, "prefetch_count": 8,
                  "broker": {"transport": "redis", "hostname": "127.0.0.1"},
                  "pool": {"implementation": "prefork", "max-concurrency": 4,
                           "processes": [101, 102]},
                  "total": {"tasks.add": 1500, "billing.charge": 20}},
        "active": [{"id": TASKS[2].id, "name": "images.resize", "args": "(3, 640)",
                    "kwargs": {}, "time_start": T0 + 3.01, "worker_pid": 101,
                    "acknowledged": True}],
        "reserved": [],
        "scheduled": [{"eta": "2026-09-21T14:20:00+00:00", "priority": 6,
                       "request": {"id": "later-1", "name": "reports.build", "args": []}}],
        "revoked": ["gone-1", "gone-2"],
        "registered": ["billing.charge [rate_limit=10/m]", "tasks.add"],
        "active_queues": [{"name": "celery", "routing_key": "celery",
                           "exchange": {"name": "celery", "type": "direct"}}],
        "conf": {"worker_prefetch_multiplier": 4, "task_acks_late": False},
    }

    def inspect(self, hostname: str, method: str, *arguments: str) -> Any:
        return self.REPLIES.get(method)


def table_rows(screen: Any, table_id: str) -> list[list[str]]:
    table = screen.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def on_screen(widget: Any, size: tuple[int, int]) -> bool:
    """Whether all of ``widget`` is inside the terminal, above the footer."""
    region = widget.region
    return region.height > 0 and region.y >= 0 and region.bottom <= size[1] - 1


# getting to the failure ----------------------------------------------------------------------
async def test_three_keys_from_anywhere_to_the_newest_failures_traceback_at_80x24():
    console = FixedConsole(snapshot=INCIDENT)
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3")  # somewhere else first
        await pilot.press("1", "tab", "enter")
        await pilot.pause()
        screen = console.screen
        assert isinstance(screen, TaskDetailScreen) and screen.task_id == FAILED.id
        traceback = screen.query_one("#traceback", TextArea)
        assert on_screen(traceback, SMALL) and on_screen(screen.query_one("#exception"), SMALL)
        assert "ValueError: card declined for order 8" in screen_text(console)


async def test_double_clicking_a_recent_failure_opens_its_detail():
    console = FixedConsole(snapshot=INCIDENT)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.pause()
        failures = console.screen.query_one("#failures", DataTable)
        assert failures.get_row_at(1)[1].plain == "billing.charge"
        # The second failure (row 0 is the header): the first click moves the cursor there.
        await pilot.double_click("#failures", offset=(3, 2))
        await pilot.pause()
        assert isinstance(console.screen, TaskDetailScreen)
        assert console.screen.task_id == TASKS[3].id


async def test_enter_opens_the_chosen_failure_after_newer_failures_redraw_the_list():
    newer = changed(FAILED, id="newest-failure", updated=FAILED.updated + 60)
    console = FixedConsole(snapshot=INCIDENT)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("1", "tab", "down")  # the second failure: task 4
        console.last_input = 0.0  # the redraw below is not held back for the keys
        console.apply(dataclasses.replace(SNAPSHOT, tasks=(newer,)))
        await pilot.pause()
        failures = console.screen.query_one("#failures", DataTable)
        assert failures.ordered_rows[0].key.value == newer.id  # redrawn, the newest on top
        await pilot.press("enter")
        await pilot.pause()
        assert console.screen.task_id == TASKS[3].id


async def test_the_detail_shows_the_failure_before_what_the_task_is_and_its_timeline():
    console = FixedConsole(snapshot=INCIDENT)
    async with console.run_test(size=SMALL) as pilot:
        console.push_screen(TaskDetailScreen(TASKS[3].id))
        await pilot.pause()
        screen = console.screen
        order = [screen.query_one(f"#{part}").region.y
                 for part in ("headline", "exception", "traceback", "fields", "timeline")]
        assert order == sorted(order)
        assert screen.query_one("#traceback", TextArea).text == TRACEBACK.rstrip("\n")


async def test_a_long_traceback_opens_on_its_last_lines_at_80x24():
    frames = "".join(f'  File "app/m{i}.py", line {i}, in f{i}\n    step_{i}()\n'
                     for i in range(40))
    long = changed(FAILED, traceback=f"Traceback (most recent call last):\n{frames}"
                                                 "OSError: disk full\n")
    console = FixedConsole(snapshot=dataclasses.replace(SNAPSHOT, tasks=(*TASKS[:7], long)))
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("1", "tab", "enter")
        await pilot.pause()
        text = screen_text(console)
        assert "OSError: disk full" in text and "step_39()" in text
        assert "Traceback (most recent call last)" not in text
        assert on_screen(console.screen.query_one("#traceback"), SMALL)


async def test_a_task_that_did_not_fail_shows_no_empty_failure_section():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        console.push_screen(TaskDetailScreen(TASKS[0].id))
        await pilot.pause()
        screen = console.screen
        assert not screen.query_one("#exception").display
        assert not screen.query_one("#traceback").display
        assert on_screen(screen.query_one("#fields"), SMALL)


async def test_the_timeline_shows_milliseconds_the_time_since_receipt_and_the_exception():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(TASKS[3].id))
        await pilot.pause()
        text = screen_text(console)
        assert "14:13:24.010" in text and "+10ms" in text
        failed = next(line for line in text.split("task-failed")[1:2])
        assert failed.startswith(" ") and "card declined for order 4" in failed


async def test_a_retried_tasks_timeline_counts_from_its_first_receipt():
    timeline = ("task-received", T0, "w", "", "task-retried", T0 + 1.5, "w", "E('first')",
                "task-received", T0 + 3, "w", "", "task-failed", T0 + 65, "w", "E('last')")
    retried = changed(TASKS[3], received=T0 + 3, timeline=timeline)
    console = FixedConsole(snapshot=dataclasses.replace(SNAPSHOT, tasks=(retried,)))
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(retried.id))
        await pilot.pause()
        text = screen_text(console)
        assert all(offset in text for offset in ("+0ms", "+1.50s", "+3.00s", "+65.00s"))
        assert "-" not in text.split("Timeline")[1].split("esc")[0].replace("task-", "")


def test_each_timeline_entry_keeps_what_its_own_event_said():
    state = State()
    base = {"uuid": "t1", "hostname": "w1", "clock": 0}
    for n, (kind, extra) in enumerate((
            ("task-received", {"name": "flaky"}),
            ("task-retried", {"exception": "ConnectionError('first')"}),
            ("task-retried", {"exception": "ConnectionError('second')"}),
            ("task-failed", {"exception": "ValueError('last')", "traceback": "Traceback"}),
            ("task-revoked", {"terminated": True, "signum": 15}))):
        state.event({**base, "type": kind, "timestamp": T0 + n, "clock": n + 1, **extra})
    details = [step[3] for step in timeline_steps(state.task("t1").timeline)]
    assert details == ["", "ConnectionError('first')", "ConnectionError('second')",
                       "ValueError('last')", "terminated, signal 15"]


def test_a_history_kept_before_timeline_details_still_loads(tmp_path):
    history = History(tmp_path / "history.sqlite", cluster="c")
    state = State()
    state.event({"type": "task-received", "uuid": "old", "hostname": "w", "timestamp": T0})
    task = state.task("old")
    assert task is not None
    history.save([task])
    with history._db:  # the row as such a history kept it: a step of three items
        history._db.execute("UPDATE tasks SET data = json_set(data, '$.timeline', "
                            "json('[[\"task-received\", ' || ? || ', \"w\"]]'))", (T0,))
    loaded = history.load()
    assert [t.timeline for t in loaded] == [("task-received", T0, "w", "")]
    history.close()


# copying ---------------------------------------------------------------------------------------
async def test_c_copies_the_selected_tasks_id_in_the_tasks_view():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        screen = console.screen
        assert isinstance(screen, TasksScreen)
        await pilot.press("down", "c")
        assert console.clipboard == screen.selected_id() != ""
        assert ("information", f"Copied {console.clipboard}") in console.notes


async def test_c_copies_the_shown_tasks_id_in_the_detail_even_from_its_text():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(TASKS[3].id))
        await pilot.pause()
        console.screen.query_one("#traceback", TextArea).focus()
        await pilot.press("c")
        assert console.clipboard == TASKS[3].id


async def test_the_traceback_and_arguments_are_text_to_select_and_copy():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(TASKS[3].id))
        await pilot.pause()
        console.screen.query_one("#traceback", TextArea).focus()
        await pilot.press("shift+home", "ctrl+c")  # it opens on its end: the exception line
        assert console.clipboard == "ValueError: card declined for order 4"
        await pilot.press("up", "up", "up", "home", "shift+down", "shift+end", "ctrl+c")
        assert console.clipboard == "\n".join(TRACEBACK.splitlines()[:2])
        console.screen.query_one("#values", TextArea).focus()
        await pilot.press("shift+end", "ctrl+c")
        assert console.clipboard == "args   (4, 19.99)"


SECRET = changed(TASKS[3], args="('***',)", kwargs="{'token': '***'}")
"""A task whose sender masked its arguments (Celery's argsrepr and kwargsrepr)."""


def values_with(monkeypatch: pytest.MonkeyPatch, task: Any, full: Any) -> Any:
    """A console on ``task`` whose worker gives ``full`` as the task's complete arguments."""
    console = FixedConsole(snapshot=dataclasses.replace(SNAPSHOT, tasks=(*TASKS[:3], task,
                                                                         *TASKS[4:])))
    monkeypatch.setattr(console.feed, "full_arguments", lambda task_id: full)
    return console


async def test_the_detail_shows_the_senders_argsrepr_never_the_arguments_it_masked(monkeypatch):
    console = values_with(monkeypatch, SECRET, Arguments(["hunter2"], {"token": "s3cr3t"}))
    async with console.run_test(size=SIZE) as pilot:
        detail = TaskDetailScreen(SECRET.id)
        console.push_screen(detail)
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        assert detail.full_arguments is not None  # the worker's answer came
        values = console.screen.query_one("#values", TextArea).text
    assert "hunter2" not in values and "s3cr3t" not in values
    assert "args   ('***',)" in values and "kwargs {'token': '***'}" in values


async def test_the_detail_shows_the_complete_arguments_when_the_sender_masked_nothing(
        monkeypatch):
    console = values_with(monkeypatch, TASKS[3], Arguments([4, 19.99], {}))
    async with console.run_test(size=SIZE) as pilot:
        detail = TaskDetailScreen(TASKS[3].id)
        console.push_screen(detail)
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        assert detail.full_arguments is not None
        values = console.screen.query_one("#values", TextArea).text
    assert "(complete, from the worker that received it)" in values


# the family ------------------------------------------------------------------------------------
def tree_lines(screen: Any) -> list[str]:
    tree = screen.query_one("#family", Tree)
    lines = []

    def walk(node: Any, depth: int) -> None:
        lines.append("  " * depth + str(node.label))
        for child in node.children:
            walk(child, depth + 1)
    walk(tree.root, 0)
    return lines


async def test_the_detail_shows_the_tasks_family_from_its_root():
    console = FixedConsole(snapshot=FAMILY)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen("fam-1"))
        await pilot.pause()
        assert tree_lines(console.screen) == [
            "flow.start SUCCESS fam-0",
            "  flow.middle SUCCESS fam-1 ◀ this task",
            "    flow.left FAILURE fam-2",
            "    flow.right SUCCESS fam-3",
            "  flow.orphan SUCCESS fam-4",
        ]


def test_forgotten_tasks_leave_the_family_index():
    """Neither the memory bound nor the state's own forgetting leaves a ghost in a tree."""
    model = ConsoleModel(max_tasks=3)
    start, middle, left, _, _ = family_tasks()
    model.apply(dataclasses.replace(SNAPSHOT, tasks=(left, start, middle)))
    assert [m.id for m in model.family.tree("fam-1", model.tasks).children[0].children] \
        == ["fam-2"]
    model.apply(dataclasses.replace(SNAPSHOT, tasks=(TASKS[0],)))  # past max_tasks: left goes
    assert model.family.tree("fam-1", model.tasks).children[0].children == []
    model.apply(dataclasses.replace(SNAPSHOT, tasks=(), removed=("fam-1",)))
    assert model.family.tree("fam-0", model.tasks) is None


async def test_a_task_without_family_shows_no_tree():
    console = FixedConsole(snapshot=FAMILY)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(TASKS[0].id))
        await pilot.pause()
        assert not console.screen.query_one("#family").display
        await pilot.press("f")
        assert console.notes[-1][0] == "warning"


async def test_f_and_enter_move_along_the_family_and_escape_comes_back():
    console = FixedConsole(snapshot=FAMILY)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen("fam-1"))
        await pilot.pause()
        await pilot.press("f", "down", "down", "enter")  # root, this task, its first child
        await pilot.pause()
        assert isinstance(console.screen, TaskDetailScreen)
        assert console.screen.task_id == "fam-2"
        assert "KeyError('x')" in screen_text(console)
        await pilot.press("f", "enter")  # the root
        await pilot.pause()
        assert console.screen.task_id == "fam-0"
        await pilot.press("escape", "escape")
        assert console.screen.task_id == "fam-1"


async def test_a_family_tree_keeps_its_cursor_while_nothing_in_it_changes():
    console = FixedConsole(snapshot=FAMILY)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen("fam-1"))
        await pilot.pause()
        await pilot.press("f", "down", "down")
        tree = console.screen.query_one("#family", Tree)
        before = tree.cursor_line
        console.apply(dataclasses.replace(SNAPSHOT, tasks=(TASKS[0],)))  # an unrelated update
        console.screen.refresh_view()
        assert tree.cursor_line == before == 2


# the worker detail -----------------------------------------------------------------------------
def replies_shown(screen: Any) -> bool:
    """Whether no tab of a worker detail still says "loading…" (each does until its reply,
    read in a thread, is shown)."""
    return all(str(note.content) != "loading…" for note in screen.query(".note").results(Static))


async def open_worker(console: FixedConsole, pilot: Any, tab: str) -> Any:
    console.push_screen(WorkerDetailScreen("qtui@alpha"))
    await pilot.pause()
    await settle(pilot, lambda: bool(console.screen.query("#inspect")), "the detail's tabs")
    console.screen.query_one("#inspect", TabbedContent).active = f"tab-{tab}"
    await pilot.pause()
    # Each tab says "loading…" until its reply, read in a thread, is shown (late on a loaded
    # machine): one pause was not always enough.
    await settle(pilot, lambda: replies_shown(console.screen), "every inspect reply shown")
    return console.screen


async def test_the_worker_detail_shows_its_replies_as_tables():
    console = InspectedConsole()
    async with console.run_test(size=SIZE) as pilot:
        screen = await open_worker(console, pilot, "stats")
        stats = dict(map(tuple, table_rows(screen, "table-stats")))
        assert stats["pid"] == "4242" and stats["broker.transport"] == "redis"
        assert stats["total.tasks.add"] == "1500" and "pool.max-concurrency" not in stats
        pool = dict(map(tuple, table_rows(screen, "table-pool")))
        assert pool == {"implementation": "prefork", "max-concurrency": "4",
                        "processes": "101, 102"}
        assert table_rows(screen, "table-active") == [
            [TASKS[2].id, "images.resize", "(3, 640)", "14:13:23.010", "101"]]
        assert table_rows(screen, "table-scheduled") == [
            ["2026-09-21T14:20:00+00:00", "6", "later-1", "reports.build", ""]]
        assert table_rows(screen, "table-registered") == [
            ["billing.charge", "rate_limit=10/m"], ["tasks.add", ""]]
        assert table_rows(screen, "table-active_queues") == [
            ["celery", "celery", "direct", "celery"]]
        assert "0 rows" in str(screen.query_one("#note-reserved").render())


async def test_enter_on_an_active_task_of_a_worker_opens_its_detail():
    console = InspectedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await open_worker(console, pilot, "active")
        console.screen.query_one("#table-active", DataTable).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(console.screen, TaskDetailScreen)
        assert console.screen.task_id == TASKS[2].id


async def test_a_reply_naming_one_task_twice_shows_both_rows():
    class Twice(InspectedConsole):
        REPLIES: ClassVar[dict[str, Any]] = {**InspectedConsole.REPLIES,
                                             "revoked": ["same", "same", "other"]}

    console = Twice()
    async with console.run_test(size=SIZE) as pilot:
        screen = await open_worker(console, pilot, "revoked")
        assert table_rows(screen, "table-revoked") == [["same"], ["same"], ["other"]]


async def test_c_copies_a_worker_detail_row_or_its_task_id():
    console = InspectedConsole()
    async with console.run_test(size=SIZE) as pilot:
        screen = await open_worker(console, pilot, "pool")
        screen.query_one("#table-pool", DataTable).focus()
        await pilot.press("down", "c")
        assert console.clipboard == "max-concurrency\t4"
        screen.query_one("#inspect", TabbedContent).active = "tab-scheduled"
        await pilot.pause()
        await pilot.press("c")
        assert console.clipboard == "later-1"


def test_a_reply_of_an_unexpected_shape_is_shown_as_keys_and_values():
    assert worker_table("active", {"odd": [1, {"x": 2}]}) == (
        ("Key", "Value"), [(None, ["odd", '[1, {"x": 2}]'])])
    assert worker_table("registered", "tasks.add") == (
        ("Key", "Value"), [(None, ["", "tasks.add"])])
    columns, rows = worker_table("revoked", ["a", 7])
    assert columns == ("ID",) and rows == [("a", ["a"]), (None, ["7"])]


async def test_a_worker_that_answers_with_an_error_says_so_in_red():
    class Failing(InspectedConsole):
        def inspect(self, hostname: str, method: str, *arguments: str) -> Any:
            return {"error": "[bold]no such method[/]"} if method == "conf" else None

    console = Failing()
    async with console.run_test(size=SIZE) as pilot:
        screen = await open_worker(console, pilot, "conf")
        assert "answered conf with an error: [bold]no such method[/]" in screen_text(console)
        assert "did not reply to stats" in str(screen.query_one("#note-stats").render())


# snapshots (80x24 and the default size) ---------------------------------------------------------
@pytest.mark.parametrize("size", [SMALL, SIZE], ids=["80x24", "140x36"])
def test_failed_task_detail_layout(snap_compare, size):
    assert snap_compare(FixedConsole(snapshot=INCIDENT), press=["1", "tab", "enter"],
                        terminal_size=size)


@pytest.mark.parametrize("size", [SMALL, SIZE], ids=["80x24", "140x36"])
def test_task_family_layout(snap_compare, size):
    async def open_middle(pilot: Any) -> None:
        pilot.app.push_screen(TaskDetailScreen("fam-1"))
        await pilot.pause()
        await pilot.press("f")
    assert snap_compare(FixedConsole(snapshot=FAMILY), run_before=open_middle,
                        terminal_size=size)


@pytest.mark.parametrize("size", [SMALL, SIZE], ids=["80x24", "140x36"])
def test_worker_detail_layout(snap_compare, size):
    async def open_detail(pilot: Any) -> None:
        await pilot.press("2")
        await settle(pilot, lambda: isinstance(pilot.app.screen, WorkersScreen), "the Workers view")
        await pilot.press("enter")
        # Each tab says "loading…" until its reply, read in a thread, is shown: a thread a
        # loaded machine ran late left the snapshot with some tabs still loading.
        await settle(pilot, lambda: isinstance(pilot.app.screen, WorkerDetailScreen)
                     and replies_shown(pilot.app.screen), "every inspect reply shown")
    assert snap_compare(InspectedConsole(), run_before=open_detail, terminal_size=size)



def test_a_workers_reserved_and_scheduled_tabs_never_show_arguments_sent_as_values():
    """Asked in safe mode, a worker sends the reprs; a Celery worker ignores it for reserved and
    scheduled and sends the arguments themselves, a secret its sender masked included."""
    request = {"id": "t1", "name": "tasks.login", "args": ["s3cret"], "kwargs": {}}
    for tab, reply in (("reserved", [request]),
                       ("scheduled", [{"eta": None, "priority": 0, "request": request}])):
        _, rows = worker_table(tab, reply)
        assert "s3cret" not in repr(rows) and UNSHOWN in rows[0][1]
    _, rows = worker_table("reserved", [{**request, "args": "('***',)"}])
    assert "('***',)" in rows[0][1]
