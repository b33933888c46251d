"""first_line: the one line of an exception's message that a one-line error shows; json_problem:
where a JSON text breaks, worded once."""

import json

import pytest

from mtlcli.errors import first_line, json_problem


def test_first_line_of_a_multi_line_message():
    assert first_line(RuntimeError("\n  size mismatch for heads.a.weight\n  copying a param...\n")) == (
        "size mismatch for heads.a.weight")
    assert first_line("first\nsecond") == "first"


def test_an_empty_message_gives_the_exception_type_and_an_empty_text_nothing():
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("  \n ")) == "RuntimeError"
    assert first_line("") == ""


def test_limit_cuts_the_line():
    assert first_line(ValueError("abcdef\nghi"), 3) == "abc"
    assert first_line(ValueError("abc"), 200) == "abc"


@pytest.mark.parametrize("text, line, problem", [
    ('{"texts": ["a', True, "Unterminated string starting at line 1 column 12"),  # json's message ends in "at"
    ('{"a" 1}', True, "Expecting ':' delimiter at line 1 column 6"),
    ('{\n"a" 1}', True, "Expecting ':' delimiter at line 2 column 5"),
    ('{"a": "b', False, "Unterminated string starting at column 7"),
])
def test_json_problem_says_where_once(text, line, problem):
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads(text)
    assert json_problem(caught.value, line=line) == problem
