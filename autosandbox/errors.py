"""Errors the user can act on: printed as one line, no traceback, non-zero exit."""

import shutil


class UserError(Exception):
    """A problem with the input or the environment, stated so the user can fix it."""

    exit_code = 2


class HealthError(UserError):
    """No healthy sandbox could be found, or the service did not come back healthy."""

    exit_code = 3


def require_tool(name: str, how: str) -> str:
    """The path of a program autosandbox runs, or a UserError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} is not installed: {how}")
    return path
