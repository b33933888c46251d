"""first_line: the one line of an exception's message that a one-line error shows."""

from mtlcli.errors import first_line


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
