"""Errors for bad user input: main.py and tools print these as one line and exit non-zero."""


class UserInputError(ValueError):
    """A flag, file or record the user supplied is wrong; the message names it."""


class Preempted(Exception):
    """Training stopped on request (SIGTERM) after saving a checkpoint."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint} saved")
        self.step, self.checkpoint = step, checkpoint
