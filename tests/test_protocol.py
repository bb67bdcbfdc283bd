"""Task message protocol v2: building, parsing, validation, and agreement with real Celery."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
import reprlib
from datetime import datetime, timedelta, timezone

import celery
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import serialization

from qtui.core import App, protocol
from qtui.core.exceptions import ContentDisallowed, ProtocolError
from qtui.core.protocol import (
    ARGSREPR_MAXSIZE,
    NO_EMBED,
    SENT_AT_HEADER,
    TaskMessage,
    build,
    decode,
    json_body,
    json_loads,
    parse,
    resent_properties,
    saferepr,
    stamped_header_names,
)


def _wire(**overrides):
    message = TaskMessage(id="t-1", task="tasks.add", args=(2, 3), kwargs={"z": 1})
    wire = build(message)
    wire.headers.update(overrides)
    return wire


def test_build_then_parse_round_trips_every_field():
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    sent = TaskMessage(
        id="abc", task="tasks.add", args=(1, "two", [3]), kwargs={"k": {"n": 1}}, eta=eta,
        expires=eta + timedelta(hours=1), retries=2, time_limit=30.0, soft_time_limit=20.0,
        parent_id="p", group="g", group_index=4, reply_to="reply-q", priority=7,
        ignore_result=True, headers={"custom": "x"},
    )
    wire = build(sent)
    got = parse(list(wire.body), wire.headers, wire.properties)
    assert got == sent


def test_build_uses_celery_header_layout():
    wire = build(TaskMessage(id="i", task="t", args=(1,), time_limit=10, soft_time_limit=5))
    assert wire.headers["lang"] == "py"
    assert wire.headers["timelimit"] == [10, 5]  # [hard, soft], as Celery's code sends
    assert wire.headers["root_id"] == "i"
    assert wire.headers["argsrepr"] == "(1,)"
    assert wire.properties == {"correlation_id": "i", "reply_to": ""}
    assert wire.body == ([1], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                   "chord": None})


def test_argsrepr_is_truncated_to_its_limit():
    message = TaskMessage(id="i", task="t", args=("x" * 50_000,))
    assert len(message.argsrepr) <= ARGSREPR_MAXSIZE
    assert message.argsrepr.endswith("...")


def test_saferepr_survives_a_failing_repr():
    class Bad:
        def __repr__(self):
            raise RuntimeError("boom")

    assert "Bad" in saferepr([Bad()], 100)


@pytest.mark.parametrize("kwargs", [
    {"b": 1, "a": 2},  # a plain dict: repr() itself
    {"b": [1, {"z": 1, "y": 2}], "a": None},  # nested: through reprlib
])
def test_kwargsrepr_is_celerys_whatever_the_value_types(kwargs):
    """Celery's saferepr shows a dict's items in insertion order, nested ones too."""
    celery_saferepr = pytest.importorskip("celery.utils.saferepr").saferepr
    assert saferepr(kwargs, 10_000) == celery_saferepr(kwargs)


def test_a_long_kwargsrepr_keeps_the_order_the_call_wrote():
    kwargs = {f"k{n}": [n] for n in range(70, 0, -1)}
    text = saferepr(kwargs, 10_000)
    assert text.startswith("{'k70': [70], 'k69': [69], ") and text.endswith("'k7': [7], ...}")


def _reprlib_text(value, maxsize=ARGSREPR_MAXSIZE):
    """saferepr's text as reprlib itself writes it: qtui's repr with reprlib's own dispatch
    for every item (no builtin-repr shortcut)."""
    reference = copy.copy(protocol._repr)
    reference.repr1 = functools.partial(reprlib.Repr.repr1, reference)
    text = reference.repr(value)
    return text if len(text) <= maxsize else text[: maxsize - 3] + "..."


@pytest.mark.parametrize("value", [
    {"task": {"task": "t", "args": (1, "a")}, "it": [(n,) for n in range(10)]},  # a chunk
    [(1, 2.5, None, True), ["s", -(10 ** 29)], {"k": "v"}, (), [], {}],
    ([[[[1], [2]]]], {"deep": [[[["x"]]]]}),  # past reprlib's depth limit
    ([list(range(70))], (tuple(range(65)),), [{str(n): n for n in range(65)}]),  # too long
    ([10 ** 40, "y" * 2000, 1.5e300, float("nan")], [b"bytes", {1, 2}]),  # shortened, other
])
def test_nested_arguments_are_shown_as_reprlib_shows_them(value):
    assert saferepr(value, ARGSREPR_MAXSIZE) == _reprlib_text(value)


def test_a_chunks_part_is_shown_without_reprlib_visiting_each_item(monkeypatch):
    """A ``chunks`` message's kwargsrepr (a list of argument tuples) costs a builtin repr,
    not reprlib's method lookup and join per item."""
    visited = []
    for name in ("repr_tuple", "repr_int"):
        original = getattr(reprlib.Repr, name)
        monkeypatch.setattr(reprlib.Repr, name, lambda self, x, level, _o=original, _n=name: (
            visited.append(_n), _o(self, x, level))[1])
    part = {"task": {"task": "t"}, "it": [(n,) for n in range(10)]}
    assert saferepr(part, ARGSREPR_MAXSIZE) == repr(part)
    assert visited == []


def test_naive_dates_are_read_as_utc_and_z_suffix_is_accepted():
    wire = _wire(eta="2030-01-01T00:00:00", expires="2030-01-01T01:00:00Z")
    got = parse(list(wire.body), wire.headers, wire.properties)
    assert got.eta == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert got.expires == datetime(2030, 1, 1, 1, tzinfo=timezone.utc)


def test_user_headers_are_kept_apart_from_protocol_headers():
    wire = _wire(tenant="acme")
    assert parse(list(wire.body), wire.headers, wire.properties).headers == {"tenant": "acme"}


def test_each_publish_is_stamped_with_its_time_in_a_header_apart_from_user_headers():
    import time
    before = time.time()
    wire = _wire(tenant="acme")
    got = parse(list(wire.body), wire.headers, wire.properties)
    assert got.sent_at is not None and before <= got.sent_at <= time.time()
    assert got.headers == {"tenant": "acme"}


@pytest.mark.parametrize("value", ["yesterday", True, float("nan"), None])
def test_a_publish_time_that_is_not_a_number_leaves_the_message_undated(value):
    wire = _wire(**{SENT_AT_HEADER: value})
    got = parse(list(wire.body), wire.headers, wire.properties)
    assert got.sent_at is None and got.task == "tasks.add"


def test_protocol_v1_body_is_understood():
    body = {"task": "tasks.add", "id": "v1", "args": [1, 2], "kwargs": {}, "retries": 1,
            "eta": None, "expires": None, "timelimit": [None, None]}
    got = parse(body, {}, {})
    assert (got.task, got.id, got.args, got.retries) == ("tasks.add", "v1", (1, 2), 1)


@pytest.mark.parametrize(("change", "words"), [
    ({"task": None}, "headers.task is missing"),
    ({"id": ""}, "headers.id is missing"),
    ({"task": 5}, "headers.task must be a string"),
    ({"eta": "tomorrow"}, "headers.eta is not an ISO 8601 date"),
    ({"expires": 12}, "headers.expires must be an ISO 8601 date string"),
    ({"retries": -1}, "headers.retries must be a whole number >= 0"),
    ({"retries": "3"}, "headers.retries must be a whole number >= 0"),
    ({"timelimit": [1]}, "headers.timelimit must be [hard, soft]"),
    ({"timelimit": ["a", None]}, "hard time limit must be a number"),
    ({"stamps": []}, "headers.stamps must be a mapping"),
    ({"argsrepr": 3}, "headers.argsrepr must be a string"),
])
def test_malformed_headers_name_the_field(change, words):
    wire = _wire(**change)
    with pytest.raises(ProtocolError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse(list(wire.body), wire.headers, wire.properties)


@pytest.mark.parametrize(("body", "words"), [
    ([[1], {}], r"body must be \[args, kwargs, embed\]"),
    ("hello", r"body must be \[args, kwargs, embed\]"),
    ([5, {}, {}], "args must be a list"),
    ([[], [1], {}], "kwargs must be a mapping"),
    ([[], {}, []], "body embed must be a mapping"),
    ([[], {}, {"callbacks": "x"}], "embed.callbacks must be a list"),
])
def test_malformed_bodies_name_the_problem(body, words):
    wire = _wire()
    with pytest.raises(ProtocolError, match=words):
        parse(body, wire.headers, wire.properties)


def test_bad_priority_is_refused():
    wire = _wire()
    with pytest.raises(ProtocolError, match="priority"):
        parse(list(wire.body), wire.headers, {**wire.properties, "priority": 1000})


def test_a_message_that_is_no_task_is_refused():
    with pytest.raises(ProtocolError, match="not a task message"):
        parse({"hello": "world"}, {"x": 1}, {})


def test_pickle_is_refused_unless_accepted():
    import pickle
    with pytest.raises(ContentDisallowed, match="pickle"):
        decode(pickle.dumps([1]), "application/x-python-serialize", "binary", ["json"])


def test_undecodable_json_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="cannot decode"):
        decode(b"{not json", "application/json", "utf-8", ["json"])


@pytest.mark.parametrize("text", [
    b'[[{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}], {}, {}]',
    b'[[{"\\u005f_type__": "decimal", "__value__": "1.5"}], {}, {}]',
])
def test_kombus_typed_json_values_are_decoded_as_kombu_decodes_them(text):
    from kombu.utils.json import loads as kombu_loads
    got = decode(text, "application/json", "utf-8", ["json"])
    assert got == kombu_loads(text) and not isinstance(got[0][0], dict)


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["__type__", "__value__", "datetime", "\\u"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["__type__", "__value__", "a", "\u00e9"]) | st.text(
        max_size=6), children, max_size=3),
    max_leaves=12))
def test_json_loads_agrees_with_kombus_json(value):
    from kombu.utils.json import dumps as kombu_dumps
    from kombu.utils.json import loads as kombu_loads
    text = kombu_dumps(value)
    try:
        expected = kombu_loads(text)
    except Exception:  # a typed value kombu cannot build (it raises anything): a ValueError here
        for form in (text, text.encode()):
            with pytest.raises(ValueError, match="typed JSON value"):
                json_loads(form)
        return
    assert json_loads(text.encode()) == expected and json_loads(text) == expected


@pytest.mark.parametrize("text", [
    '{"a": [1, {"b": null}]}', ' {"a": 1}', '{"a": 1}\n', '[1] x', '', 'nul', '"x"', '1e400',
    '{"a": 1', '[1,]', '\t[]\t', '{"a": "\\ud800"}', '[' * 100 + ']' * 100, '[1]\n',
    '[1] \r\n\t ', '[1]  \n x', '{"a": 1}{"b": 2}', '[' * 100_000])
def test_json_loads_reads_plain_json_as_json_loads_does(text):
    """The value json.loads reads, or its very error (a dead letter's reason quotes it)."""
    def outcome(read):
        try:
            return read()
        except Exception as exc:  # a RecursionError too: the same one, compared
            return type(exc), str(exc)
    assert outcome(lambda: json_loads(text.encode())) == outcome(lambda: json.loads(text))


@pytest.mark.parametrize("text", ['[1, 2]\n', '{"a": 1}\r\n', '[1] x'])
def test_json_loads_reads_text_after_the_value_without_parsing_it_again(text, monkeypatch):
    """A body with a newline after it (Go's json.Encoder, a redis-cli push) or hostile
    garbage after a large value is scanned once, not once and then again by json.loads."""
    def again(*_args, **_kwargs):
        raise AssertionError("json.loads parsed the text a second time")
    monkeypatch.setattr(json, "loads", again)
    try:
        assert json_loads(text.encode()) in ([1, 2], {"a": 1})
    except json.JSONDecodeError as exc:
        assert (exc.msg, exc.pos) == ("Extra data", 4)


CRAFTED_TYPED_VALUES = [
    {"__type__": [], "__value__": None}, {"__type__": {}, "__value__": 1},
    {"__type__": "nope", "__value__": 1}, {"__type__": "datetime", "__value__": []},
    {"__type__": "date", "__value__": 5}, {"__type__": "time", "__value__": "x"},
    {"__type__": "uuid", "__value__": "abc"}, {"__type__": "uuid", "__value__": {"x": 1}},
    {"__type__": "decimal", "__value__": "x"}, {"__type__": "decimal", "__value__": []},
    {"__type__": "bytes", "__value__": 1}, {"__type__": "base64", "__value__": "a"},
    {"__type__": "base64", "__value__": None}]


@pytest.mark.parametrize("crafted", CRAFTED_TYPED_VALUES, ids=repr)
def test_a_typed_value_kombu_cannot_build_is_a_value_error_naming_its_type(crafted):
    text = json.dumps({"headers": {"x": [crafted]}})
    with pytest.raises(ValueError, match=r"typed JSON value \{'__type__': " +
                       re.escape(repr(crafted["__type__"]))):
        json_loads(text.encode())


def test_header_values_of_a_str_subclass_are_read_as_text():
    class Name(str):
        pass
    wire = _wire()
    headers = {Name(k): (Name(v) if isinstance(v, str) else v) for k, v in wire.headers.items()}
    got = parse(list(wire.body), headers, wire.properties)
    assert (got.task, got.root_id, got.argsrepr) == ("tasks.add", "t-1", "(2, 3)")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
header_keys = st.sampled_from(["task", "id", "eta", "expires", "retries", "timelimit", "root_id",
                               "parent_id", "group", "group_index", "argsrepr", "stamps",
                               "stamped_headers", "shadow", "origin", "ignore_result"])


@settings(max_examples=400, deadline=None)
@given(body=json_values, headers=st.dictionaries(header_keys, json_values, max_size=8),
       properties=st.dictionaries(st.sampled_from(["priority", "reply_to", "x"]), json_values,
                                  max_size=3))
def test_fuzzed_messages_parse_or_raise_protocol_error(body, headers, properties):
    try:
        message = parse(body, headers, properties)
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert isinstance(message.task, str) and message.task
        assert isinstance(message.id, str) and message.id
        assert isinstance(message.args, tuple) and isinstance(message.kwargs, dict)


@settings(max_examples=200, deadline=None)
@given(args=st.lists(json_values, max_size=5),
       kwargs=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=5),
       retries=st.integers(0, 100), priority=st.none() | st.integers(0, 9))
def test_fuzzed_valid_messages_round_trip(args, kwargs, retries, priority):
    sent = TaskMessage(id="x", task="t", args=tuple(args), kwargs=kwargs, retries=retries,
                       priority=priority)
    wire = build(sent)
    got = parse(list(wire.body), wire.headers, wire.properties)
    assert (got.args, got.kwargs, got.retries, got.priority) == (
        sent.args, sent.kwargs, retries, priority)


def test_a_message_built_by_real_celery_parses_to_the_same_task():
    app = celery.Celery("interop", set_as_current=False)
    eta = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    built = app.amqp.as_task_v2(
        "tid-1", "tasks.mul", args=(6, 7), kwargs={"scale": 2}, eta=eta, expires=eta,
        retries=1, time_limit=60, soft_time_limit=50, parent_id="par", group_id="grp",
        reply_to="rq",
    )
    got = parse(list(built.body), built.headers, built.properties)
    assert (got.id, got.task, got.args, got.kwargs) == ("tid-1", "tasks.mul", (6, 7),
                                                         {"scale": 2})
    assert (got.eta, got.expires, got.retries) == (eta, eta, 1)
    assert (got.time_limit, got.soft_time_limit) == (60.0, 50.0)
    assert (got.parent_id, got.group, got.reply_to) == ("par", "grp", "rq")


def test_a_header_name_that_is_not_text_is_refused():
    """An AMQP table key that is not UTF-8 arrives as bytes (py-amqp's way)."""
    wire = _wire()
    with pytest.raises(ProtocolError, match="header names must be text"):
        parse(list(wire.body), {**wire.headers, b"\xff\xfe": "v"}, wire.properties)


def test_changing_the_embed_a_send_plan_hands_out_leaves_later_messages_alone(monkeypatch):
    """A plan without canvas fields hands out the one embed every such message shares: a caller
    that adds a ``chain`` to it must not send that chain with every later message (here
    through a JSON codec the program registered itself, which serializes the embed as it is)."""
    monkeypatch.setitem(serialization.registry._encoders, "json",
                        serialization.registry._encoders["json"])
    monkeypatch.setitem(serialization.registry._decoders, "application/json",
                        serialization.registry._decoders["application/json"])
    serialization.register("json", json.dumps, json.loads, "application/json", "utf-8")
    app = App("shared-embed", broker="memory://", backend=None)
    names = ("t.first", "t.second")
    try:
        for name in names:
            app.send_task(name, queue="shared-embed")
        with contextlib.suppress(TypeError):  # read-only: refusing the change is the fix
            app.plan("t.first", None, {"queue": "shared-embed"}).embed["chain"] = [{"task": "x"}]
        for name in names:
            app.send_task(name, queue="shared-embed")
        with app.connection_for_write() as conn:
            bodies = [conn.default_channel.basic_get("shared-embed", no_ack=True).decode()
                      for _ in range(4)]
    finally:
        app.close()
    assert [body[2] for body in bodies] == [dict.fromkeys(
        ("callbacks", "errbacks", "chain", "chord"))] * 4


@pytest.mark.parametrize("embed", [NO_EMBED, {"callbacks": None, "errbacks": None,
                                              "chain": [{"task": "next"}], "chord": None}])
@pytest.mark.parametrize("args, kwargs", [((), {}), ((1, "é", [2.5, None]), {"k": {"n": "\n"}})])
def test_a_calls_json_body_is_the_text_json_writes_for_the_whole_body(args, kwargs, embed):
    assert json_body(args, kwargs, embed, json.dumps) == json.dumps([args, kwargs, dict(embed)])


def test_a_serializer_registered_again_is_accepted_as_kombu_now_reads_it():
    """The accepted content types are worked out once per setting, and again when kombu's
    registry maps one of its names to another type (a name registered again)."""
    from kombu.serialization import register, unregister

    from qtui.core.protocol import decode
    register("qtui-test-ser", json.dumps, json.loads, content_type="application/x-qtui-v1",
             content_encoding="utf-8")
    try:
        assert decode(b"[1]", "application/x-qtui-v1", "utf-8", ["qtui-test-ser"]) == [1]
        register("qtui-test-ser", json.dumps, json.loads, content_type="application/x-qtui-v2",
                 content_encoding="utf-8")
        assert decode(b"[2]", "application/x-qtui-v2", "utf-8", ["qtui-test-ser"]) == [2]
        with pytest.raises(ContentDisallowed):
            decode(b"[1]", "application/x-qtui-v1", "utf-8", ["qtui-test-ser"])
    finally:
        unregister("qtui-test-ser")


def test_new_ids_are_distinct_rfc_4122_version_4_uuids():
    """Ids written 256 at a time: each a valid version-4 UUID in uuid's own text, none twice
    (over more than one batch)."""
    import uuid
    ids = [protocol.new_id() for _ in range(3 * 256 + 7)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        value = uuid.UUID(text)
        assert str(value) == text and value.version == 4 and value.variant == uuid.RFC_4122


def test_a_forked_child_does_not_reuse_its_parents_ready_ids():
    import os
    protocol.new_id()  # the parent now holds ready ids
    ready = list(protocol._ready_ids)
    assert ready
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, protocol.new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child not in ready


def test_a_resent_copy_keeps_its_user_id_only_when_its_sender_asks():
    """RabbitMQ refuses a ``user_id`` that is not the connection's user: the worker, which
    connects as the senders of what it consumes, keeps it; the console's move does not."""
    received = {"correlation_id": "c", "priority": 3, "user_id": "guest", "timestamp": 5,
                "expiration": "60000", "reply_to": None, "delivery_mode": 2}
    kept = {"correlation_id": "c", "priority": 3, "timestamp": 5}
    assert resent_properties(received, {}, keep_user_id=False) == kept
    assert resent_properties(received, {}, keep_user_id=True) == {**kept, "user_id": "guest"}


def test_a_resent_copy_may_expire_with_the_time_left_of_its_expires_only_while_expiring():
    later = {"expires": "2999-01-01T00:00:00+00:00"}
    assert resent_properties({}, later, keep_user_id=False)["expiration"] > 0
    assert resent_properties({}, later, keep_user_id=False, expiring=False) == {}


@pytest.mark.parametrize(("given", "names"), [
    (None, None), ("a", ["a"]), ([], []), (["b", "a", "b"], ["b", "a"]), (("a", 1, None), ["a"]),
])
def test_stamped_headers_are_names_each_once_in_their_first_place(given, names):
    assert stamped_header_names(given) == names
