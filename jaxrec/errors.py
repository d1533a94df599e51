"""The one exception type for mistakes a user can fix.

Every user-facing entry point raises `UserError` with a message that says what was wrong and how
to fix it; the CLI prints the message without a traceback and exits 2.
"""


class UserError(Exception):
  """Bad input from the user: a file, a flag, a config value. The message says how to fix it."""
