"""The console's filter language."""

from __future__ import annotations

import pytest

from qtui.tui.query import QueryError, matches, parse

TASK = {"id": "3f2a", "name": "tasks.add", "state": "FAILURE", "worker": "w1@host",
        "args": "(2, 2) {'retry': True}", "result": "ValueError('bad timeout')"}


@pytest.mark.parametrize("query", [
    "", "name:tasks.add", "name:ADD", "state:failure", "state:SUCCESS,FAILURE", "worker:w1",
    "args:retry", "timeout", "/Val.*Error/", "name:/^tasks\\./", "-state:SUCCESS",
    "name:add state:FAILURE", '"bad timeout"', "id:3f2a",
])
def test_matching_queries(query):
    assert matches(parse(query), TASK)


@pytest.mark.parametrize("query", [
    "name:mul", "state:SUCC", "state:SUCCESS", "worker:w2", "-state:FAILURE", "nothing-here",
    "name:add state:SUCCESS", "/^add/",
])
def test_non_matching_queries(query):
    assert not matches(parse(query), TASK)


@pytest.mark.parametrize(("query", "words"), [
    ("colour:red", "unknown field 'colour'"),
    ("name:", "needs a value"),
    ("/[unclosed/", "bad regular expression"),
    ('"open quote', "cannot read the filter"),
])
def test_bad_queries_say_what_is_wrong(query, words):
    with pytest.raises(QueryError, match=words):
        parse(query)
