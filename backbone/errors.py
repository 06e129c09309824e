"""The one exception type for bad user input across the project."""


class BadInputError(ValueError):
    """Bad user input: the message is one sentence naming the file or value and what was expected."""
