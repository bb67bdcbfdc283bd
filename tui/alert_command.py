"""``alert_command``: the program told when an alert fires and when it clears.

It runs without a shell, with the alert as one JSON object on its standard input (the fields of
:meth:`qtui.core.alerts.Transition.as_dict`, plus ``cluster``: the broker URL, password
masked), and is killed after ``alert_command_timeout`` seconds. Whatever goes wrong with it is
logged: an alert must never stop the console or the check that raised it.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import threading
from collections.abc import Sequence

from qtui.core import App
from qtui.core.alerts import Transition
from qtui.core.config import mask_url

logger = logging.getLogger("qtui.alerts")

#: Characters of the command's standard error kept in the log when it fails.
STDERR_LOGGED = 500


class AlertCommand:
    """The configured command, and how to run it for some transitions."""

    def __init__(self, argv: Sequence[str], timeout: float, cluster: str) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.cluster = cluster

    @classmethod
    def from_app(cls, app: App) -> AlertCommand | None:
        """The app's ``alert_command``, or None when it has none."""
        setting = app.conf.alert_command
        if not setting:
            return None
        argv = shlex.split(setting) if isinstance(setting, str) else list(setting)
        return cls(argv, float(app.conf.alert_command_timeout), mask_url(app.broker_url))

    def run(self, transitions: Sequence[Transition]) -> None:
        """Run the command once per transition, in order, waiting for each."""
        for transition in transitions:
            self._run_one(transition)

    def start(self, transitions: Sequence[Transition]) -> threading.Thread:
        """:meth:`run` in a thread of its own, so the caller (the console's event feed) goes
        on receiving meanwhile."""
        thread = threading.Thread(target=self.run, args=(list(transitions),),
                                  name="qtui-alert-command", daemon=True)
        thread.start()
        return thread

    def _run_one(self, transition: Transition) -> None:
        payload = json.dumps({**transition.as_dict(), "cluster": self.cluster}, sort_keys=True)
        name, event = transition.status.rule.name, transition.event
        try:
            done = subprocess.run(self.argv, input=payload, capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            logger.warning("alert_command %s for %s (%s) was killed after %g s",
                           self.argv[0], name, event, self.timeout)
            return
        except OSError as exc:  # not found, not executable: the setting is wrong
            logger.warning("alert_command %s for %s (%s) could not run: %s",
                           self.argv[0], name, event, exc)
            return
        if done.returncode != 0:
            logger.warning("alert_command %s for %s (%s) exited with %d: %s", self.argv[0],
                           name, event, done.returncode, done.stderr[-STDERR_LOGGED:].strip())
