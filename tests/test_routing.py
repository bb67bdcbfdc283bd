"""Routing: task_routes in every form, explicit options, named queues, priorities, defaults."""

from __future__ import annotations

import re
import sys
import types

import pytest

from qtui.core.config import Conf
from qtui.core.exceptions import ConfigError
from qtui.core.routing import Router


def route(conf: dict, name: str = "tasks.add", **options):
    return Router(Conf(conf)).route(name, (), {}, options)


def test_default_queue_is_celery_bound_to_celery_and_sent_through_the_default_exchange():
    r = route({})
    assert (r.queue.name, r.queue.exchange.name, r.queue.routing_key) == \
        ("celery", "celery", "celery")
    # Celery's rule: a direct route with no explicit exchange and routing key goes straight
    # to the queue by name, needing no binding.
    assert (r.exchange, r.routing_key) == ("", "celery")


def test_task_default_queue_renames_the_default():
    r = route({"task_default_queue": "jobs"})
    assert (r.queue.name, r.queue.exchange.name, r.exchange, r.routing_key) == \
        ("jobs", "jobs", "", "jobs")


def test_an_explicit_exchange_and_routing_key_are_used_as_given():
    r = route({}, queue="celery", exchange="celery", routing_key="celery")
    assert (r.queue.name, r.exchange, r.routing_key) == ("celery", "celery", "celery")
    r = route({"task_routes": {"tasks.add": {"queue": "q", "exchange": "x", "routing_key": "k"}}})
    assert (r.queue.name, r.exchange, r.routing_key) == ("q", "x", "k")


def test_half_an_explicit_route_on_a_direct_queue_goes_to_the_queue_as_celery_sends_it():
    assert (route({}, routing_key="other").exchange, route({}, routing_key="other").routing_key) \
        == ("", "celery")


def test_exact_name_route():
    r = route({"task_routes": {"tasks.add": {"queue": "hipri"}}})
    assert (r.queue.name, r.routing_key) == ("hipri", "hipri")


def test_exact_names_win_over_patterns():
    table = {"tasks.*": {"queue": "glob"}, "tasks.add": {"queue": "exact"}}
    assert route({"task_routes": table}).queue.name == "exact"
    assert route({"task_routes": table}, "tasks.mul").queue.name == "glob"


def test_compiled_regex_route():
    r = route({"task_routes": {re.compile(r"^video\."): {"queue": "media"}}}, "video.encode")
    assert r.queue.name == "media"


def test_list_of_routers_tried_in_order_with_callables():
    def never(name, args, kwargs, options, task=None, **kw):
        return None

    def by_arg(name, args, kwargs, options, task=None, **kw):
        return "callable-q" if name == "tasks.add" else None

    routes = [never, by_arg, {"tasks.*": {"queue": "fallback"}}]
    assert route({"task_routes": routes}).queue.name == "callable-q"
    assert route({"task_routes": routes}, "tasks.mul").queue.name == "fallback"


def test_router_named_by_import_string(monkeypatch):
    module = types.ModuleType("myrouters")
    module.route_all = lambda name, *a, **k: {"queue": "imported"}
    monkeypatch.setitem(sys.modules, "myrouters", module)
    assert route({"task_routes": "myrouters:route_all"}).queue.name == "imported"


def test_explicit_options_win_over_routes():
    r = route({"task_routes": {"tasks.add": {"queue": "hipri", "priority": 1}}},
              queue="manual", priority=9)
    assert (r.queue.name, r.priority) == ("manual", 9)


def test_named_queue_from_task_queues_keeps_its_exchange_and_key():
    conf = {"task_queues": {"hipri": {"exchange": "fast", "exchange_type": "topic",
                                      "routing_key": "fast.#", "max_priority": 10}},
            "task_routes": {"tasks.add": {"queue": "hipri", "routing_key": "fast.add"}}}
    r = route(conf)
    assert (r.queue.name, r.exchange, r.routing_key) == ("hipri", "fast", "fast.add")
    assert r.queue.exchange.type == "topic"
    assert r.queue.queue_arguments == {"x-max-priority": 10}


def test_exchange_only_route_declares_no_queue():
    r = route({"task_routes": {"tasks.add": {"exchange": "events", "routing_key": "k"}}})
    assert (r.queue, r.exchange, r.routing_key) == (None, "events", "k")


def test_default_priority_applies_when_no_route_sets_one():
    assert route({"task_default_priority": 4}).priority == 4


def test_missing_queue_is_refused_when_creation_is_off():
    with pytest.raises(ConfigError, match="not in task_queues"):
        route({"task_create_missing_queues": False}, queue="elsewhere")


def test_bad_route_values_are_clear():
    with pytest.raises(ConfigError, match="unknown key"):
        route({"task_routes": {"tasks.add": {"queeu": "x"}}})
    with pytest.raises(ConfigError, match="cannot import router"):
        route({"task_routes": "nowhere.at_all"})
    with pytest.raises(ConfigError, match="unknown option"):
        route({"task_queues": {"q": {"exchnage": "x"}}})


def test_a_quorum_queue_is_declared_with_its_type_and_without_the_default_priority():
    conf = {"task_queues": {"orders": {"queue_type": "quorum"}, "mail": {}},
            "task_queue_max_priority": 9}
    assert route(conf, queue="orders").queue.queue_arguments == {"x-queue-type": "quorum"}
    assert route(conf, queue="mail").queue.queue_arguments == {"x-max-priority": 9}


def test_a_queue_offers_rabbitmqs_consumer_timeout_in_seconds():
    conf = {"task_queues": {"reports": {"consumer_timeout": 7200}}}
    assert route(conf, queue="reports").queue.queue_arguments == {
        "x-consumer-timeout": 7_200_000}


def test_bad_queue_types_and_timeouts_are_clear():
    with pytest.raises(ConfigError, match="queue_type must be one of classic, quorum"):
        route({"task_queues": {"q": {"queue_type": "stream"}}}, queue="q")
    with pytest.raises(ConfigError, match="a quorum queue has no priorities"):
        route({"task_queues": {"q": {"queue_type": "quorum", "max_priority": 5}}}, queue="q")
    with pytest.raises(ConfigError, match="consumer_timeout must be a number of seconds"):
        route({"task_queues": {"q": {"consumer_timeout": "1h"}}}, queue="q")
