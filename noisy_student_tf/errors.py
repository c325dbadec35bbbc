"""Errors for bad user input: main.py and tools print these as one line and exit non-zero."""


class UserInputError(ValueError):
    """A flag, file or record the user supplied is wrong; the message names it."""
