"""The one exception users are meant to see.

Anything the user can fix (a bad config key, a missing image, a tag that is not in
the class list) raises :class:`RpnetError` with a message that names the key or the
file. The command line prints that message as one line and exits non-zero; other
exceptions are bugs and keep their traceback.
"""


class RpnetError(Exception):
    """An error caused by the user's input, with a message that says what to fix."""


class ConfigError(RpnetError):
    """A config file or override is wrong; the message names the key."""


class DataError(RpnetError):
    """A dataset is malformed; the message names the file."""


class OutputError(DataError):
    """A file a stage wrote is missing or cannot be read (``path``): ``rpnet run`` redoes that stage
    (deleting the unreadable file) and the stages below it, instead of stopping."""

    def __init__(self, message: str, path) -> None:
        super().__init__(message)
        self.path = path
