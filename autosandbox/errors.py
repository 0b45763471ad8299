"""Errors the user can act on: printed as one line, no traceback, non-zero exit."""


class UserError(Exception):
    """A problem with the input or the environment, stated so the user can fix it."""

    exit_code = 2


class HealthError(UserError):
    """No healthy sandbox could be found, or the service did not come back healthy."""

    exit_code = 3
