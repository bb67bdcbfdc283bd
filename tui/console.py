"""The console: a full-screen Textual app to see and steer a qtui or Celery cluster.

The feed's thread workers receive events and poll the broker; every refresh interval they hand
the UI a Snapshot, which the console applies to its model and the visible view redraws from.
The UI thread never waits on the network: actions run in thread workers too and report back
as notifications.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import events, work
from textual.app import App as TextualApp
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.reactive import Reactive
from textual.screen import Screen

from qtui.core import App
from qtui.core.alerts import FIRING, Rule, Transition
from qtui.core.config import CONSOLE_ACTIONS, mask_url
from qtui.core.display import printable

from . import arguments, command_mode, equivalents, palette
from .actions import ActionResult, Actions, Retry, reapplied
from .audit import LOCAL, AuditError, AuditLog, audit_log_for
from .audit import entry as audit_entry
from .bulk import BulkPlan, Target
from .feed import Feed
from .history import History, default_history_path
from .idle_gc import IdleCollector
from .model import ConsoleModel
from .rows import Snapshot, TaskRow
from .views.alerts import AlertsScreen
from .views.base import ClusterView
from .views.metrics import MetricsScreen
from .views.modals import CommandScreen, ConfirmScreen, HelpScreen
from .views.notifications import NotificationsScreen
from .views.overview import OverviewScreen
from .views.queues import QueuesScreen
from .views.scheduled import ScheduledScreen
from .views.schedules import SchedulesScreen
from .views.tasks import TasksScreen
from .views.workers import WorkersScreen

#: Action outcomes kept in :attr:`Console.outcomes`.
OUTCOMES_KEPT = 50
#: Notifications kept in the log (`N`).
NOTIFICATIONS_KEPT = 200
#: Seconds a notification stays: short, since the log keeps them all; errors stay longer.
NOTE_SECONDS = {"information": 3.0, "warning": 5.0, "error": 8.0}

VIEW_KEYS = Binding.Group("views", compact=True)

VIEWS: dict[str, type[ClusterView]] = {
    "overview": OverviewScreen, "workers": WorkersScreen, "tasks": TasksScreen,
    "queues": QueuesScreen,
    "schedules": SchedulesScreen,
    "alerts": AlertsScreen,
    "metrics": MetricsScreen,
    "scheduled": ScheduledScreen,
}


@dataclass(frozen=True)
class Note:
    """One notification as shown, for the log."""

    time: float
    severity: SeverityLevel
    title: str
    message: str


class Console(TextualApp[None]):
    """``qtui``: the console. ``read_only`` hides and refuses every action that changes anything;
    ``console_permissions`` only those it does not list."""

    CSS_PATH = Path(__file__).with_name("console.tcss")  # absolute: subclasses live elsewhere
    TITLE = "qtui"
    # State colours readable (4.5:1) on plain and striped rows, dark and light (palette.py).
    ansi_theme_dark = Reactive(palette.DARK, init=False)
    ansi_theme_light = Reactive(palette.LIGHT, init=False)
    MODES: ClassVar[dict[str, Any]] = dict(VIEWS)
    BINDINGS: ClassVar[list[BindingType]] = [
        # One footer entry, "12345 views", for the five: the footer must fit 80 columns.
        Binding("1", "switch_mode('overview')", "Overview", group=VIEW_KEYS),
        Binding("2", "switch_mode('workers')", "Workers", group=VIEW_KEYS),
        Binding("3", "switch_mode('tasks')", "Tasks", group=VIEW_KEYS),
        Binding("4", "switch_mode('queues')", "Queues", group=VIEW_KEYS),
        Binding("5", "switch_mode('schedules')", "Schedules", group=VIEW_KEYS),
        Binding("6", "switch_mode('metrics')", "Metrics", group=VIEW_KEYS),
        # Out of the footer too: "123456 views" already fills its share of 80 columns.
        Binding("7", "switch_mode('scheduled')", "Scheduled", show=False),
        # Out of the footer (it must fit 80 columns with a view's own keys); in the help.
        Binding("colon", "command", "Command", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit", show=False),
        Binding("minus", "last_view", "Last view", show=False),
        Binding("N", "notifications", "Notification log", show=False),
        Binding("ctrl+l", "dismiss_notifications", "Dismiss notifications", show=False),
        Binding("exclamation_mark", "switch_mode('alerts')", "Alerts", show=False),
    ]

    class SnapshotReady(Message):
        def __init__(self, snapshot: Snapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

    class ActionDone(Message):
        def __init__(self, outcome: ActionResult) -> None:
            super().__init__()
            self.outcome = outcome

    def __init__(self, app: App, *, read_only: bool = False, context: str | None = None,
                 contexts: dict[str, App] | None = None, start_feed: bool = True,
                 history: bool | None = None) -> None:
        super().__init__()
        self.read_only = read_only
        self.contexts = contexts or {}
        self.start_feed = start_feed
        self.use_history = app.conf.console_history if history is None else history
        self.last_input = 0.0
        """Monotonic time of the latest key or click (views hold redraws back meanwhile)."""
        self.outcomes: deque[ActionResult] = deque(maxlen=OUTCOMES_KEPT)
        """The latest actions' outcomes, oldest first (each was also shown as a notification)."""
        self.notification_log: deque[Note] = deque(maxlen=NOTIFICATIONS_KEPT)
        """Every notification shown, oldest first (the `N` view)."""
        self.prompt_history: dict[str, list[str]] = {"command": [], "filter": []}
        """What was entered at the ``:`` and ``/`` prompts, oldest first (↑ recalls it)."""
        self.last_mode: str | None = None
        """The view shown before the current one (`-` goes back to it)."""
        self.collector = IdleCollector()
        self._attach_cluster(app, context)

    def _attach_cluster(self, app: App, context: str | None) -> None:
        """Point the console at a cluster: a fresh model, feed and actions."""
        conf = app.conf
        self.cluster = app
        self.context = context
        self.refresh_interval = float(conf.console_refresh_interval)
        self.model = ConsoleModel(max_tasks=conf.console_max_tasks)
        self.actions = Actions(app)
        allowed = conf.console_permissions
        self.permissions = frozenset() if self.read_only else frozenset(
            CONSOLE_ACTIONS if allowed is None else allowed)
        """The actions this console may take (``console_permissions`` names)."""
        history = None
        if self.use_history:
            history = History(conf.console_history_file or default_history_path(),
                              cluster=mask_url(app.broker_url), limit=conf.console_max_tasks,
                              max_field=conf.console_max_field,
                              metrics_hours=conf.console_metrics_hours,
                              metrics_days=conf.console_metrics_days)
        self.feed = Feed(app, max_tasks=conf.console_max_tasks, history=history,
                         reapply_pauses="pause" in self.permissions,
                         on_reapplied=self.record_reapplied)
        self.audit: AuditLog | None = audit_log_for(app) if self.use_history else None
        """Where actions are recorded: the history file's audit table (none without history:
        ``--no-history`` promises not to touch the file)."""
        self.sub_title = self._describe()

    def _describe(self) -> str:
        # The mode first: a long broker URL must not push it off an 80-column header.
        mode = "read-only · " if self.read_only else ""
        if not self.read_only and self.permissions != set(CONSOLE_ACTIONS):
            mode = f"may {', '.join(sorted(self.permissions)) or 'do nothing'} · "
        context = f"{self.context} · " if self.context else ""
        return f"{mode}{context}{mask_url(self.cluster.broker_url)}"

    def on_mount(self) -> None:
        self.collector.start()
        self.set_interval(1.0, lambda: self.collector.tick(self.last_input))
        self.switch_mode("overview")
        self.apply(self.initial_snapshot())
        if self.start_feed:
            self.start()

    def initial_snapshot(self) -> Snapshot:
        """What to show before the first events arrive: what the history kept."""
        with self.feed.lock:
            return self.feed.snapshot()

    def start(self) -> None:
        self.run_feed(self.feed)
        self.run_poll(self.feed)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self.last_input = time.monotonic()
        await super().on_event(event)

    # data ---------------------------------------------------------------------------------------
    @work(thread=True, group="feed", exit_on_error=False)
    def run_feed(self, feed: Feed) -> None:
        """Receive events until the feed stops; post a snapshot every refresh interval."""
        feed.run(lambda snapshot: self._post_snapshot(feed, snapshot),
                 interval=self.refresh_interval)

    @work(thread=True, group="poll", exit_on_error=False)
    def run_poll(self, feed: Feed) -> None:
        """Poll queue depths and worker details until the feed stops."""
        feed.poll()

    def _post_snapshot(self, feed: Feed, snapshot: Snapshot) -> None:
        if feed is self.feed:  # a context switch leaves the old feed's last words unread
            self.post_message(self.SnapshotReady(snapshot))

    def on_console_snapshot_ready(self, message: SnapshotReady) -> None:
        self.apply(message.snapshot)

    def apply(self, snapshot: Snapshot) -> None:
        failures = self.model.feed_failures
        self.model.apply(snapshot)
        for transition in snapshot.alert_events:
            self.notify_alert(transition)
        if snapshot.feed_failures > failures:
            self.notify(f"The event feed failed ({snapshot.last_feed_failure}) and was started "
                        "again; events sent meanwhile may be missing.", title="Event feed",
                        severity="error", timeout=15)
        # Not while exiting: a snapshot still queued then finds the view's widgets gone.
        if self.is_running and self.screen_stack and isinstance(self.screen, ClusterView):
            self.screen.redraw()

    @property
    def alert_rules(self) -> tuple[Rule, ...]:
        """The rules of the ``alerts`` setting of the cluster shown."""
        return self.feed.alerts.rules

    def notify_alert(self, transition: Transition) -> None:
        self.notify(transition.describe(), title="Alert",
                    severity="error" if transition.event == FIRING else "information")

    def inspect(self, hostname: str, method: str, *arguments: Any) -> Any:
        """One worker's reply to an inspect method, or None if it did not answer (blocking)."""
        return self.feed.inspect(hostname, method, *arguments)

    # actions ------------------------------------------------------------------------------------
    def allows(self, permission: str) -> bool:
        """Whether ``permission`` (a ``console_permissions`` name) is granted."""
        return permission in self.permissions

    def perform(self, call: Callable[[], ActionResult]) -> None:
        if self.read_only:
            self.notify("The console is read-only (--read-only)", severity="error")
            return
        self._perform(call)

    @work(thread=True, group="actions", exit_on_error=False)
    def _perform(self, call: Callable[[], ActionResult]) -> None:
        outcome = call()
        self.record(outcome)
        self.post_message(self.ActionDone(outcome))

    def record(self, outcome: ActionResult) -> None:
        """Append an action's outcome to the audit trail (from a thread worker: it writes a
        file). A failure is reported and changes nothing else: the action is done."""
        if self.audit is None:
            return
        replies = outcome.replies or tuple((LOCAL, line) for line in outcome.lines)
        try:
            self.audit.record(audit_entry(self.cluster, "console", outcome.action or outcome.title,
                                          outcome.targets, replies, outcome.ok))
        except AuditError as exc:
            self.call_from_thread(self.notify, str(exc), title="Audit trail",
                                  severity="warning")

    def record_reapplied(self, hostname: str, done: dict[str, Any]) -> None:
        """The feed re-paused queues on a worker that came online: an action taken, audited."""
        self.record(reapplied(hostname, done))

    def on_console_action_done(self, message: ActionDone) -> None:
        outcome = message.outcome
        self.outcomes.append(outcome)
        self.notify(outcome.message, title=outcome.title,
                    severity="information" if outcome.ok else "error")

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """A notification shown as plain text with control characters made visible: messages
        carry hostnames, task names and workers' replies. ``markup`` is accepted and ignored so
        that no caller can turn it back on. Compact (the title leads the message's first line)
        and short-lived; the log (`N`) keeps it."""
        message, title = printable(message, multiline=True), printable(title)
        self.notification_log.append(Note(time.time(), severity, title, message))
        if isinstance(self.screen, NotificationsScreen):
            self.screen.redraw()
        super().notify(f"{title}: {message}" if title else message, severity=severity,
                       timeout=NOTE_SECONDS[severity] if timeout is None else timeout,
                       markup=False)

    def action_dismiss_notifications(self) -> None:
        self.clear_notifications()

    def action_notifications(self) -> None:
        if not isinstance(self.screen, NotificationsScreen):
            self.push_screen(NotificationsScreen())

    def action_audit(self) -> None:
        """``:audit``: the newest actions taken on this cluster."""
        from .views.audit import AuditScreen
        if not isinstance(self.screen, AuditScreen):
            self.push_screen(AuditScreen())

    def action_dead_letters(self) -> None:
        """``:dead``: the dead letters of every queue."""
        from .views.dead_letters import DeadLettersScreen
        if not isinstance(self.screen, DeadLettersScreen):
            self.push_screen(DeadLettersScreen())

    def retry_task(self, task: TaskRow) -> None:
        """Send a task again with its full original arguments, where it was sent the first time
        (refused when only a truncated repr of the arguments is known), once the user said yes."""
        self.retry_tasks([task])

    def retry_tasks(self, tasks: list[TaskRow]) -> None:
        """Retry one task or several: their full arguments are looked up first (one request
        for all), so the question shows the scripted command and names those skipped."""
        if self.read_only:
            self.notify("The console is read-only (--read-only)", severity="error")
            return
        if not self.allows("retry"):
            self.notify("Retry is not in console_permissions", severity="error")
            return
        self._look_up_arguments(tasks)

    @work(thread=True, group="actions", exit_on_error=False)
    def _look_up_arguments(self, tasks: list[TaskRow]) -> None:
        named = [t.id for t in tasks if t.name]
        if len(named) == 1:  # the task's detail asks the same way
            one = self.feed.full_arguments(named[0])
            known = {} if one is None else {named[0]: one}
        else:
            known = self.feed.full_arguments_of(named)
        found = {t.id: known[t.id] if t.id in known else arguments.from_events(t.args, t.kwargs)
                 for t in tasks}
        self.call_from_thread(self._confirm_retry, tasks, found)

    def _confirm_retry(self, tasks: list[TaskRow],
                       found: dict[str, arguments.Arguments | None]) -> None:
        def refusal(task: TaskRow) -> str | None:
            known = found.get(task.id)
            if not task.name:
                return "name unknown"
            if known is None:
                return "full arguments unknown, only a truncated repr was seen"
            if not known.complete:
                return ("its sender masked the arguments (argsrepr) and no worker or result "
                        "backend has the real ones: the mask would be sent as its arguments")
            return None
        if len(tasks) == 1 and (reason := refusal(tasks[0])) is not None:
            self.notify(f"{tasks[0].id} cannot be retried faithfully ({reason}).",
                        severity="error")
            return
        plan = BulkPlan.of("Retry", "task", (Target(t.id, t.name, refusal(t)) for t in tasks))
        by_id = {t.id: t for t in tasks}
        sends = [_retry_of(by_id[i], found[i]) for i in plan.ids]
        commands = [None if r.masked else
                    equivalents.retry(r.name, r.args, r.kwargs, r.queue, r.exchange,
                                      r.routing_key) for r in sends]
        command = None if None in commands else equivalents.retries(
            [c for c in commands if c is not None])
        if len(tasks) == 1:
            question = (f"Retry {tasks[0].name} [{tasks[0].id}]? It is sent again as a new "
                        "task with the same arguments.")
            details = _masking_note(sends[0], found[tasks[0].id]) if sends else ""
        else:
            question = plan.question("Each is sent again as a new task with the same arguments.")
            masked = sum(send.masked for send in sends)
            details = plan.details() + (
                f"\n{masked} of them masked by their senders (argsrepr/kwargsrepr): sent with the "
                "same masks, and no scripted command is shown (it would carry the real "
                "arguments)." if masked else "")
        if not plan.targets:
            self.notify(plan.nothing_left(), severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.perform(lambda: self.actions.retry_many(sends))
        self.push_screen(ConfirmScreen(question, command, details, plan.typed), answered)

    # navigation ---------------------------------------------------------------------------------
    async def action_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()

    def action_command(self) -> None:
        def entered(text: str | None) -> None:
            if text:
                self.run_command(text)
        self.push_screen(CommandScreen(self.prompt_history["command"],
                                       command_mode.completions(sorted(self.contexts))), entered)

    def switch_mode(self, mode: str) -> Any:
        """Show a view, remembering the one it replaces for `-`."""
        if self.current_mode and mode != self.current_mode:
            self.last_mode = self.current_mode
        return super().switch_mode(mode)

    def action_last_view(self) -> None:
        """k9s's `-`: back to the view shown before this one."""
        if self.last_mode is not None:
            self.switch_mode(self.last_mode)

    def run_command(self, text: str) -> None:
        """Carry out one ``:`` command (the table in :mod:`.command_mode` names them)."""
        typed, _, rest = text.strip().lstrip(":").strip().partition(" ")
        command = command_mode.resolve(typed)
        word = command.name if command is not None else typed.lower()
        if word == "quit":
            self.exit()
        elif word in VIEWS:
            self.switch_mode(word)
            if word == "tasks":
                screen = self.screen
                if isinstance(screen, TasksScreen):
                    screen.set_filter(rest.strip())
            if word == "scheduled" and isinstance(self.screen, ScheduledScreen):
                self.screen.set_filter(rest.strip())
        elif word == "context":
            self.switch_context(rest.strip())
        elif word == "help":
            self.action_help()
        elif word == "notifications":
            self.action_notifications()
        elif word == "audit":
            self.action_audit()
        elif word == "dead":
            self.action_dead_letters()
        elif word:
            known = ", ".join(c.usage() for c in command_mode.COMMANDS)
            self.notify(f"Unknown command :{word}. Try {known}", severity="error")

    def switch_context(self, name: str) -> None:
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none configured ([contexts.NAME])"
            self.notify(f"Unknown context {name!r}; known: {known}", severity="error")
            return
        self.feed.stop()
        if self.audit is not None:
            self.audit.close()
        self._attach_cluster(self.contexts[name], name)
        self.apply(self.initial_snapshot())
        if self.start_feed:
            self.start()
        self.notify(f"Switched to {name}", title="Context")

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p): Textual's own commands, the views and the contexts."""
        yield from super().get_system_commands(screen)
        for name in VIEWS:
            yield SystemCommand(f"{name.title()} view", f"Show the {name} view (:{name})",
                                partial(self.switch_mode, name))
        for name in sorted(self.contexts):
            yield SystemCommand(f"Context: {name}", f"Switch to the cluster {name}",
                                partial(self.switch_context, name))

    def action_help(self) -> None:
        """The help screen, built from the BINDINGS of the view, its tables and the console (keys
        as the footer shows them: `/`, `]`, `:`), and from the ``:`` command table."""
        screen = self.screen
        sections = []
        own = _bindings(screen, below=ClusterView)
        if own:
            sections.append(("This view", self._keys(own, screen)))
        if isinstance(screen, ClusterView):
            sections.append(("Tables", self._keys(_bindings(screen, only=ClusterView), screen)))
        sections.append(("Everywhere", self._keys(_bindings(self, only=Console), self)))
        sections.append(("Commands (:)", [
            (c.usage(), " ".join([c.help, *(f":{alias}" for alias in c.aliases)]))
            for c in command_mode.COMMANDS]))
        sections.append(("Filter (/)", [("name:TEXT", "name contains TEXT"),
                                        ("state:A,B", "state is A or B"),
                                        ("worker:", "also args: id: result:"),
                                        ("/REGEX/", "regular expression"),
                                        ("-term", "negate a term"),
                                        ("text", "free text anywhere"),
                                        ("↑ ↓ Tab", "history, completion (and at :)")]))
        sections.append(("Also", [("ctrl+p", "command palette (themes, keys)"),
                                  ("⏎", "drill down"), ("esc", "back")]))
        self.push_screen(HelpScreen(sections))

    def _keys(self, bindings: list[Binding], node: Any) -> list[tuple[str, str]]:
        """(keys, description) per binding the node allows now, each key as the footer shows it
        (``slash`` is `/`)."""
        keys = []
        for binding in bindings:
            if node.check_action(binding.action, ()) is False:
                continue
            shown = " ".join(dict.fromkeys(self.get_key_display(b)
                                           for b in Binding.make_bindings([binding])))
            keys.append((shown, binding.description))
        return keys

    async def action_quit(self) -> None:
        self.feed.stop()
        self.exit()

    def on_unmount(self) -> None:
        self.feed.stop()
        if self.audit is not None:
            self.audit.close()
        self.collector.stop()


def _retry_of(task: TaskRow, found: arguments.Arguments | None) -> Retry:
    """What a retry of ``task`` sends: the arguments found, where it went first, its registered
    name and shadow, and its sender's reprs where they mask the arguments."""
    assert found is not None, "a task whose arguments are unknown is refused before"
    argsrepr, kwargsrepr = arguments.resent_reprs(*task.reprs, found)
    return Retry(task.id, found.name or task.name, found.args, found.kwargs,
                 queue=task.queue or None, exchange=task.exchange or None,
                 routing_key=task.routing_key or None, argsrepr=argsrepr, kwargsrepr=kwargsrepr,
                 shadow=found.shadow)


def _masking_note(send: Retry, found: arguments.Arguments | None) -> str:
    """What the retry question adds about the arguments' masks: the sender's reprs in place of
    the arguments, or that the arguments come from the events' reprs (which may be a mask)."""
    if send.masked and found is not None and found.masked is None \
            and not (send.argsrepr or send.kwargsrepr):
        return ("Nothing says whether its sender masked the arguments (no event carried their "
                "reprs, no worker remembers it): they are not shown, and are sent with empty "
                "reprs; no scripted command is shown (it would carry them).")
    if send.masked:
        return (f"Its sender masked the arguments (argsrepr/kwargsrepr): args {send.argsrepr}  "
                f"kwargs {send.kwargsrepr}. They are sent with the real arguments and the same "
                "masks; no scripted command is shown (it would carry the real arguments).")
    if found is not None and found.from_events:
        return ("Its arguments are parsed from the reprs its events carried (no worker or "
                "result backend has them): had its sender masked them with argsrepr, the mask "
                "would be sent as its arguments.")
    return ""


def _bindings(node: Any, *, below: type | None = None, only: type | None = None
              ) -> list[Binding]:
    """The BINDINGS a node's classes declare, its own class first: all of them, those of the
    classes ``below`` a base class (a view's own keys), or ``only`` those of one class."""
    found = []
    for cls in type(node).__mro__:
        if below is not None and not (issubclass(cls, below) and cls is not below):
            continue
        if only is not None and cls is not only:
            continue
        for binding in cls.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding):
                found.append(binding)
            elif isinstance(binding, tuple):
                found.append(Binding(*binding))
    return found
