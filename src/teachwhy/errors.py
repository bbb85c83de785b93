"""User-facing errors: one clear line (what, where, how to fix); the CLI prints it and exits non-zero."""


class UserError(Exception):
    """A mistake in what the user gave us (a file, a flag, a model name). Never shown with a traceback
    unless --debug is set. The message is one line: what is wrong, where, and how to fix it."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
