"""The one exception type for mistakes a user can fix: the CLI prints its message and exits 2."""


class UserError(Exception):
    """A problem in the user's input (recipe, path, checkpoint), with a message that names the fix."""
