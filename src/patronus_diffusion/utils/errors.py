"""The kinds of error a user can fix. The CLI prints these as one line (exit code 2); any other exception is a
bug in this package and keeps its traceback."""


class UserError(Exception):
    """Base of every error whose message tells the user what to change (input, flags, files, disk)."""


class UsageError(UserError, ValueError):
    """A bad argument or value (a flag, an edit spec, a tensor of the wrong shape passed to the API)."""
