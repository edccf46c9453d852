"""JSON under limits: the same values as json.loads, and limits that stop the parse early."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from digitlab.safejson import MAX_NUMBER_CHARS, JSONLimitError, loads

VALID = ['{}', '[]', '0', '-1.5e3', '"x"', 'true', 'null', ' [ 1 , 2 ] ',
         '{"a": [1, 2.5, -3e2, true, false, null, "\\u00e9\\n"], "b": {"c": []}}',
         '[[], [[]], {}]', '{"a": 1, "a": 2}', '"\\ud83d\\ude00"']
INVALID = ['', ' ', '[', ']', '{"a"}', '[1,]', '{"a":1,}', '01', 'tru', '[1] x', 'NaN',
           '{"a" 1}', '[1 2]', '{1: 2}', '"\x01"', '"abc', '\ufeff[]', '[-]', '{"a":}', "'a'"]


@pytest.mark.parametrize("doc", VALID)
def test_same_values_as_json(doc):
    assert loads(doc) == json.loads(doc)
    assert loads(doc.encode()) == json.loads(doc)


@pytest.mark.parametrize("doc", INVALID)
def test_malformed_json_is_a_decode_error(doc):
    with pytest.raises(json.JSONDecodeError):
        loads(doc)


def test_non_finite_numbers_only_when_asked():
    with pytest.raises(json.JSONDecodeError, match="NaN is not JSON"):
        loads('{"mean": NaN}')
    value = loads('[NaN, Infinity, -Infinity]', allow_nan=True)
    assert value[0] != value[0] and value[1:] == [float("inf"), float("-inf")]


def test_not_utf8_is_a_decode_error():
    with pytest.raises(json.JSONDecodeError, match="not UTF-8"):
        loads(b'["\xff"]')


def test_a_million_items_stop_at_the_first_past_the_limit():
    """Issue 15: a 4 MB body of a million tiny items was all parsed and validated first."""
    body = ('{"images":[' + ",".join(['"A"'] * 1_000_000) + ']}').encode()
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(JSONLimitError) as info:
        loads(body, max_items=32)
    took = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.value.kind == "items" and info.value.key == "images" and info.value.limit == 32
    assert took < 0.05 and peak < 20_000_000  # the decoded text (4 MB) and little else


def test_deep_nesting_is_a_limit_not_a_recursion_error():
    """Issue 15: JSON nested 100,000 deep gave a RecursionError (a 500)."""
    with pytest.raises(JSONLimitError, match="nested deeper than 8 levels"):
        loads("[" * 100_000 + "]" * 100_000, max_depth=8)
    with pytest.raises(JSONLimitError, match="deeper"):
        loads('{"a":' * 100_000 + "1" + "}" * 100_000)
    assert loads("[" * 8 + "]" * 8, max_depth=8) == [[[[[[[[]]]]]]]]


def test_values_strings_and_numbers_are_bounded():
    with pytest.raises(JSONLimitError) as info:
        loads("[" + ",".join(["[]"] * 20) + "]", max_values=10)
    assert info.value.kind == "values"
    with pytest.raises(JSONLimitError) as info:
        loads('{"image": "' + "A" * 101 + '"}', max_string=100)
    assert info.value.kind == "string" and info.value.key == "image"
    assert loads('{"image": "' + "A" * 100 + '"}', max_string=100)["image"] == "A" * 100
    with pytest.raises(JSONLimitError, match="number"):
        loads("1" * (MAX_NUMBER_CHARS + 1))
    with pytest.raises(JSONLimitError) as info:  # object members count as items too
        loads('{"a": {' + ",".join(f'"k{i}": 0' for i in range(5)) + "}}", max_items=4)
    assert info.value.kind == "items" and info.value.key == "a"
