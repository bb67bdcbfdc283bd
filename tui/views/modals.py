"""Small dialogs: confirm a destructive action, ask for a value, pick one of several, help."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ItemGrid, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from qtui.core.display import safe_text

from ..equivalents import Equivalent
from .history_input import HistoryInput


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a destructive action. Enter/y confirms, Esc/n cancels; ``c`` copies the
    equivalent scripted command, shown below the question. With ``typed`` (a bulk action on
    many items) the operator must type it (the count) and press Enter instead.

    Questions, like every dialog's, are shown as plain text: they carry task ids and names,
    hostnames and queue names from the cluster, never markup."""

    BINDINGS = [Binding("y", "confirm", "Yes"), Binding("n,escape", "cancel", "No"),
                Binding("c", "copy_command", "Copy command")]

    def __init__(self, question: str, command: Equivalent | None = None, details: str = "",
                 typed: str | None = None) -> None:
        super().__init__()
        self.question = question
        self.command = command
        self.details = details
        """What the action touches, beyond the question (a bulk action's sample)."""
        self.typed = typed

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(safe_text(self.question, multiline=True), id="question")
            if self.details:
                yield Static(safe_text(self.details, multiline=True), id="details")
            if self.command is not None:
                yield Static(Text.assemble(("Same as", "bold"), ", c copies it: ",
                                           safe_text(self.command.shown())), id="equivalent")
            if self.typed is not None:
                yield Input(placeholder=f"type {self.typed} and press Enter to go ahead "
                                        "(Esc: no)", id="typed")
            else:
                with Horizontal(id="buttons"):
                    yield Button("Yes", variant="error", id="yes")
                    yield Button("No", variant="primary", id="no")

    def on_mount(self) -> None:
        if self.typed is not None:
            self.query_one("#typed", Input).focus()
        else:
            self.query_one("#no", Button).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == self.typed:
            self.dismiss(True)
        else:
            self.notify(f"Type {self.typed} (the number of items) to go ahead, or Esc",
                        severity="warning")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_copy_command(self) -> None:
        if self.command is not None:
            self.app.copy_to_clipboard(self.command.text())
            self.notify(self.command.shown(), title="Copied")


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value (a rate limit, a queue name...). Enter submits, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(safe_text(self.question, multiline=True), id="question")
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one of several options (a signal, a worker...)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, choices: Iterable[str]) -> None:
        super().__init__()
        self.question = question
        self.choices = list(choices)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(safe_text(self.question, multiline=True), id="question")
            # Options are told apart by position: two workers may send the same hostname.
            yield OptionList(*[Option(safe_text(c)) for c in self.choices], id="choices")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


class CommandScreen(ModalScreen[str | None]):
    """``:`` command mode, as in k9s: a one-line prompt at the bottom of whatever view is shown
    (``:workers``, ``:tasks state:FAILURE``, ``:queues``...). Enter runs it, Esc cancels; ↑/↓
    recall earlier commands, Tab completes one."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, history: list[str] | None = None,
                 completions: list[str] | None = None) -> None:
        super().__init__()
        self.history = [] if history is None else history
        self.completions = completions

    def compose(self) -> ComposeResult:
        yield HistoryInput(self.history, self.completions, id="command",
                           placeholder=":workers  :tasks state:FAILURE  :queues  :overview  "
                                       ":context NAME  :quit")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key of the current view and of the console, generated from their BINDINGS, and the
    ``:`` commands with their aliases; in as many columns as the terminal holds."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label("Keys (Esc closes)", id="question")
            with ItemGrid(min_column_width=40, id="help-columns"):
                for title, keys in self.sections:
                    text = Text.assemble((title, "bold underline"))
                    width = max((len(key) for key, _ in keys), default=0)
                    for key, description in keys:
                        text.append("\n")
                        text.append(f"{key:<{width}} ", "bold")
                        text.append(description)
                    yield Static(text, classes="help-section")

    def action_close(self) -> None:
        self.dismiss(None)
