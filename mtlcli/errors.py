"""Exceptions that reach the user as a single line: UserError (exit code 2) and RunFailed (exit code 1)."""


class UserError(Exception):
    """Bad input or settings: the message says what is wrong and where (file, line, key)."""

    exit_code = 2


class RunFailed(UserError):
    """Training started but cannot go on (a NaN loss, a full disk): the run folder keeps its last good state."""

    exit_code = 1


def shown(value: str, limit: int = 60) -> str:
    """A value from a file as a one-line message can show it: control characters escaped, long ones cut."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(problem: BaseException | str, limit: int | None = None) -> str:
    """The first line of an exception's message (or of a text), cut to ``limit`` characters.

    Library errors often run to many lines; a one-line message keeps the first. An exception whose
    message is empty gives its type name (``KeyError``), so a message never shows ``()``; an empty
    text gives "".
    """
    text = str(problem).strip()
    if text:
        line = text.splitlines()[0]
    else:
        line = type(problem).__name__ if isinstance(problem, BaseException) else ""
    return line[:limit]


def json_problem(exc, line: bool = True) -> str:
    """Where a ``json.JSONDecodeError`` is, worded once: "Expecting value at line 1 column 4".

    Some of json's messages end in "at" already ("Unterminated string starting at"), so the place
    follows them without a second one.
    """
    where = f"line {exc.lineno} column {exc.colno}" if line else f"column {exc.colno}"
    return f"{exc.msg} {where}" if exc.msg.endswith(" at") else f"{exc.msg} at {where}"
