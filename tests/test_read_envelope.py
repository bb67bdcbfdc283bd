"""What :func:`~qtui.core.brokers.envelope.read_envelope` takes for kombu's envelope and what it
refuses: each refusal is something kombu's virtual ``Message`` would raise on past its receive
loop's ``except``; each acceptance is something kombu delivers."""

from __future__ import annotations

import json

import pytest

from qtui.core.brokers.envelope import NotAnEnvelope, check_envelope, read_envelope

from .hostile_shapes import envelope, with_properties

REFUSED = {
    "unknown-body-encoding": (with_properties(body_encoding="rot13"),
                              "unknown 'properties.body_encoding' 'rot13'"),
    "delivery-info-not-an-object": (with_properties(delivery_info=[1]),
                                    "'properties.delivery_info' is not an object"),
    "content-type-not-a-string": (envelope(**{"content-type": 5}),
                                  "'content-type' is not a string"),
    "not-utf8": (envelope().replace('"hostile"}', '"\\u00ff"}').encode().replace(
        b"\\u00ff", b"\xff"), "not JSON Python can read"),
    "no-delivery-tag": (with_properties(delivery_tag=None),
                        "'properties.delivery_tag' is neither a string nor an integer"),
    "boolean-delivery-tag": (with_properties(delivery_tag=True),
                             "'properties.delivery_tag' is neither a string nor an integer"),
}


@pytest.mark.parametrize("text, reason", REFUSED.values(), ids=REFUSED)
def test_what_kombu_cannot_build_a_message_from_is_refused_with_the_reason(text, reason):
    with pytest.raises(NotAnEnvelope, match=reason.replace("(", r"\(")):
        read_envelope(text)


@pytest.mark.parametrize("tag", ["d5a0c7e4-0d6e-4c1d-9d87-2d0b3b0e5c11", 7],
                         ids=["string", "integer"])
def test_a_delivery_tag_kombu_delivers_is_accepted(tag):
    found, body = read_envelope(with_properties(delivery_tag=tag))
    assert found["properties"]["delivery_tag"] == tag
    assert json.loads(body or b"") == {"type": "worker-heartbeat", "hostname": "hostile"}


#: Envelopes kombu delivers that a task message the Redis worker's fetch took may not be: the
#: fetch script dead-letters them, and the worker holds what the script does not decode to the
#: same rules, with the same reasons.
FETCHED_REFUSED = {
    "no-body": (envelope(body=None), "no 'body' string"),
    "headers-an-empty-list": (envelope(headers=[]), "'headers' is not an object"),
    "headers-null": (envelope(headers=None), "'headers' is not an object"),
    "tag-an-integer": (with_properties(delivery_tag=7), "no 'properties.delivery_tag' string"),
}


@pytest.mark.parametrize("text, reason", FETCHED_REFUSED.values(), ids=FETCHED_REFUSED)
def test_a_fetched_task_message_is_held_to_the_fetch_scripts_rules_as_well(text, reason):
    check_envelope(json.loads(text))  # a published message: kombu delivers it
    with pytest.raises(NotAnEnvelope, match=reason):
        check_envelope(json.loads(text), fetched=True)
