"""tuneloop's exceptions share one base class, TuneloopError, so a caller can catch
everything tuneloop raises on purpose in one clause. UserError is the one kind a user can
fix: the CLI prints it as one line."""


class TuneloopError(Exception):
    """The base of every exception tuneloop raises on purpose."""


class UserError(TuneloopError):
    """Bad input (flag, file, template, key...). Printed as `error: <message>`, exit 2."""
