"""End to end in a real terminal of 80x24: tmux runs ``qtui`` against a live worker, keys are
typed, and the captured pane is read as a user would read the screen (the overview's worker,
failure and footer, filter, drill down, revoke, rate limit)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .services import REDIS_HOST, REDIS_PORT, need, unavailable
from .worker_helpers import Setup, make_setup

BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/9"
#: The smallest terminal the console is made for: everything below must be seen in it.
COLUMNS, LINES = 80, 24


class Terminal:
    """One tmux server of our own (its own socket), one window running the console."""

    def __init__(self, name: str) -> None:
        self.socket = name

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout

    def start(self, command: list[str], cwd: str, env: dict[str, str],
              size: tuple[int, int] = (COLUMNS, LINES)) -> None:
        exports = " ".join(f"{k}={v!r}" for k, v in env.items())
        # COLUMNS and LINES (pytest's own, say) would override the pane's real size.
        self.tmux("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), "-c", cwd,
                  f"env -u COLUMNS -u LINES {exports} {' '.join(command)}")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", *(["-l"] if literal else []), *keys)
        time.sleep(0.3)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_for(self, *texts: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{texts} not on screen after {timeout}s:\n{screen}")

    def notifications(self) -> str:
        """The text of the toasts in the top-right corner, their lines joined."""
        # A toast over the filter box has the box's right border after it on each line.
        parts = [line.split("▌", 1)[1].rstrip().rstrip("▎▔▁") for line in self.screen().splitlines()
                 if "▌" in line]
        return " ".join(" ".join(parts).split())

    def wait_for_note(self, *texts: str, timeout: float = 20.0) -> str:
        """Wait for a toast holding all of ``texts``; compared without spaces, since at 80
        columns a toast wraps a long id or hostname wherever it must."""
        deadline = time.monotonic() + timeout
        notes = ""
        while time.monotonic() < deadline:
            notes = self.notifications()
            if all("".join(text.split()) in "".join(notes.split()) for text in texts):
                return notes
            time.sleep(0.2)
        raise AssertionError(f"{texts} not in the notifications after {timeout}s:\n{notes}\n"
                             f"{self.screen()}")

    def running(self) -> bool:
        """Whether the console still runs: its pane is alive (the server ends with it)."""
        panes = subprocess.run(["tmux", "-L", self.socket, "list-panes", "-a", "-F",
                                "#{pane_dead}"], capture_output=True, text=True, timeout=10)
        return panes.returncode == 0 and "0" in panes.stdout.split()

    def quit(self) -> None:
        """Press q and see the console end within 10 s."""
        self.keys("q")
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.running(), f"the console still runs after q:\n{self.screen()}"

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture
def terminal(unique) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        unavailable("tmux is not installed")
    term = Terminal(f"qtui-test-{unique}")
    yield term
    term.kill()


@pytest.fixture
def live(tmp_path, unique) -> Iterator[tuple[Setup, str]]:
    need("Redis", REDIS_HOST, REDIS_PORT)
    setup = make_setup(tmp_path, f"ct-{unique}", BROKER, BROKER)
    with setup.worker("-P", "threads", "-c", "2", name="tmux"):
        yield setup, f"tmux-{setup.queue}@{socket.gethostname()}"
    setup.cleanup()


@pytest.mark.timeout(180)
def test_the_console_in_a_real_terminal(terminal: Terminal, live, tmp_path):
    setup, hostname = live
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "TERM": "xterm-256color",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    terminal.start([sys.executable, "-m", "qtui.tui.cli", "-b", BROKER, "--no-history"],
                   str(tmp_path), env)
    terminal.wait_for("Overview", "connected")

    assert terminal.screen().splitlines()[-1].rstrip().endswith("? Help")  # the whole footer

    app = setup.app()
    good = app.send_task("tasks.add", args=[20, 22])
    app.send_task("tasks.fail", args=["printer on fire"])
    app.send_task("tasks.mark", args=["never"], countdown=30)
    assert good.get(timeout=20) == 42

    # The overview at 80 columns: the worker online, the failure with its exception.
    screen = terminal.wait_for("Recent failures", "tasks.fail", "printer on fire", "online")
    assert "tmux-" in screen

    terminal.keys("2")
    terminal.wait_for(hostname, "online", "threads")

    # Filter the tasks to the failures, then drill into the failure.
    terminal.keys("3")
    terminal.wait_for("tasks.add", "tasks.fail")
    terminal.keys("/")
    terminal.wait_for("applies")  # the filter box is open: typing now is not lost
    terminal.type("state:FAILURE")
    terminal.keys("Enter")
    screen = terminal.wait_for("tasks.fail", "filter: state:FAILURE")
    assert "tasks.add" not in screen.split("filter:")[0].split("Args")[-1]
    terminal.keys("Enter")
    # At 24 rows the timeline's last steps may be below the fold; the failure may not.
    terminal.wait_for("printer on fire", "FAILURE", "ValueError")
    terminal.keys("Escape")
    terminal.wait_for("filter: state:FAILURE")
    terminal.quit()
    app.close()


@pytest.mark.timeout(180)
def test_actions_in_a_real_terminal(terminal: Terminal, live, tmp_path):
    """Revoke and rate limit at 80x24, each reply read off its notification (a long reply
    wraps over several lines there)."""
    setup, hostname = live
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "TERM": "xterm-256color",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    terminal.start([sys.executable, "-m", "qtui.tui.cli", "-b", BROKER, "--no-history"],
                   str(tmp_path), env)
    terminal.wait_for("Overview", "connected")
    app = setup.app()
    good = app.send_task("tasks.add", args=[20, 22])
    later = app.send_task("tasks.mark", args=["never"], countdown=30)
    assert good.get(timeout=20) == 42

    # Revoke the scheduled task.
    terminal.keys(":")
    terminal.wait_for(":context NAME")  # the prompt is open: typing now is not lost
    terminal.type(f"tasks id:{later.id}")
    terminal.keys("Enter")
    terminal.wait_for(later.id[:8], "RECEIVED")  # the table shows short ids
    terminal.keys("R")
    terminal.wait_for("Revoke tasks.mark")
    terminal.keys("y")
    terminal.wait_for_note(f"{hostname}: OK tasks", later.id, "flagged as revoked")

    # Rate-limit a task type on every worker.
    terminal.keys(":")
    terminal.wait_for(":context NAME")  # the prompt is open: typing now is not lost
    terminal.type(f"tasks id:{good.id}")
    terminal.keys("Enter")
    terminal.wait_for(good.id[:8], "SUCCESS")
    terminal.keys("L")
    terminal.wait_for("Rate-limit tasks.add on")
    terminal.keys("Enter")
    terminal.wait_for("Rate limit for tasks.add")
    terminal.type("10/m")
    terminal.keys("Enter")
    terminal.wait_for_note(f"{hostname}: OK new rate limit set successfully")

    terminal.quit()
    app.close()


@pytest.mark.timeout(120)
def test_escape_sequences_in_a_tasks_data_never_reach_the_terminal(terminal: Terminal, live,
                                                                    tmp_path):
    """A task argument (hence its exception message and traceback) carrying a screen clear and
    an OSC 52 clipboard write, sent by a client: the console shows them as ␛..., the pane is not
    cleared, and tmux (which accepts OSC 52 here) gets no clipboard buffer."""
    setup, _ = live
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "TERM": "xterm-256color",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    terminal.start([sys.executable, "-m", "qtui.tui.cli", "-b", BROKER, "--no-history"],
                   str(tmp_path), env)
    terminal.tmux("set-option", "-g", "set-clipboard", "on")
    terminal.wait_for("Overview", "connected")

    app = setup.app()
    try:
        failed = app.send_task("tasks.fail", args=["pwn\x1b]52;c;b3duZWQ=\x07 \x1b[2J [/]"])
        with pytest.raises(Exception, match="pwn"):
            failed.get(timeout=20)
    finally:
        app.close()
    terminal.keys(":")
    terminal.wait_for(":context NAME")  # the prompt is open: typing now is not lost
    terminal.type(f"tasks id:{failed.id}")
    terminal.wait_for(f"tasks id:{failed.id}")
    terminal.keys("Enter")
    terminal.wait_for(failed.id[:20], "FAILURE")
    terminal.keys("Enter")
    # At 24 rows the traceback (pwn␛]52...) is below the fold: the exception's repr is not.
    screen = terminal.wait_for("FAILURE", r"ValueError('pwn\x1b]52;c;b3duZWQ=\x07 \x1b[2J [/]')",
                               timeout=30)
    assert "Tasks in memory" not in screen  # the detail, not a cleared and redrawn pane
    pane = terminal.tmux("capture-pane", "-p", "-e")
    assert "\x1b]52" not in pane and "\x1b[2J" not in pane and "\x07" not in pane
    assert terminal.tmux("list-buffers") == "", "an OSC 52 write reached tmux"
    terminal.keys("q")
