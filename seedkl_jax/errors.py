"""One error type for every bad input: its message names the input and says what to do."""


class SeedKLError(ValueError):
    """A bad input or an unusable checkpoint/text/flag. `str(e)` is one line for the user."""
