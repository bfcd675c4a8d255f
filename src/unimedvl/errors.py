"""Error types for mistakes a user can fix (bad config, bad data, bad checkpoint).

The CLI prints these as one line without a traceback; anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A problem with the user's input: the message names the file/key/line and what to do."""


class ConfigError(UserError, ValueError):
    """A configuration value or file is invalid."""


class DataError(UserError, ValueError):
    """A data record, image or dataset description is invalid."""


class CheckpointError(UserError, ValueError):
    """A checkpoint directory or file is missing, corrupt or inconsistent."""


class DiskFullError(UserError):
    """The disk filled up while writing: the message names the folder, what is intact and to free space and rerun."""
