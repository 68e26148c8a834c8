"""The one exception type for mistakes a user can fix: the CLI prints it as one line."""


class UserError(Exception):
    """Bad input (flag, file, template, key...). Printed as `error: <message>`, exit 2."""
