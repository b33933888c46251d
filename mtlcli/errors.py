"""The one exception type that reaches the user as a single line and exit code 2."""


class UserError(Exception):
    """Bad input or settings: the message says what is wrong and where (file, line, key)."""

    exit_code = 2
