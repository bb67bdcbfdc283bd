"""Broadcasts by pattern: a worker matches ``glob`` patterns against its hostname, and ``pcre``
ones only when ``worker_enable_pcre_matcher`` says so. Python's regular expressions have no
time bound: a pattern such as ``(.+)+!`` sent by anyone who can publish to the broker held the
worker's main thread for hours (no ping, no task, SIGTERM unheard)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kombu.pidbox import Mailbox

from qtui.core import App
from qtui.workers.control import HANDLERS, ControlNode

#: 31 characters: ``(.+)+!`` tries some 2**31 ways to split it before it fails.
HOSTNAME = "w-revdeep-0123456789abcdef@host"


def node(matches_pcre: bool = False) -> ControlNode:
    control = ControlNode(HOSTNAME, state=object(), handlers=HANDLERS,
                          mailbox=Mailbox("celery", type="fanout"))
    control.matches_pcre = matches_pcre
    return control


def ping(pattern: str, matcher: str) -> dict[str, Any]:
    return {"method": "ping", "arguments": {}, "pattern": pattern, "matcher": matcher,
            "destination": None, "reply_to": None, "ticket": None}


def test_pcre_matching_is_off_unless_the_worker_opts_in():
    assert App("t", broker="memory://").conf.worker_enable_pcre_matcher is False


@pytest.mark.timeout(30)
def test_a_pcre_broadcast_is_dropped_with_a_warning_by_default(caplog):
    caplog.set_level(logging.WARNING)
    assert node().handle_message(ping("(.+)+!", "pcre")) is None
    assert any("worker_enable_pcre_matcher is off" in r.getMessage() for r in caplog.records)


def test_a_worker_that_opts_in_answers_a_pcre_broadcast_that_matches_it():
    assert node(matches_pcre=True).handle_message(ping(r"w-revdeep-\w+@host", "pcre")) == {
        "ok": "pong"}
    assert node(matches_pcre=True).handle_message(ping("other@.*", "pcre")) is None


def test_a_glob_broadcast_is_matched_whatever_the_setting():
    assert node().handle_message(ping("w-revdeep-*", "glob")) == {"ok": "pong"}
    assert node().handle_message(ping("other-*", "glob")) is None
