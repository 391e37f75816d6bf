"""Errors that are the user's to fix: printed as one line naming the field or file, exit status 2, no traceback."""


class UserError(ValueError):
    """Bad input: a config value, a file, a path. The message names it and says what would be valid."""


class ConfigError(UserError):
    """One or more config fields are invalid (the message lists every problem, one per line)."""


class RunAborted(RuntimeError):
    """A worker died or hung and the run cannot go on. The message says which, why, and how to continue (exit 3)."""
