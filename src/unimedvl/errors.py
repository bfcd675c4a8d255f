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


def capped(value: object, limit: int = 200, quote: bool = False) -> str:
    """``value`` as text for a message, at most ``limit`` characters, in bounded time.

    Never format a user's value into a message in full: a YAML "billion laughs" list expands to
    billions of items when printed. Containers are shown a few levels deep and a few items wide
    (reprlib), strings cut; the cut is marked with "...". ``quote``: strings in quotes, as ``!r`` would.
    """
    import reprlib

    if isinstance(value, BaseException):
        value = str(value)
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: max(0, limit - 3)] + "..."
        return repr(text) if quote else text
    else:
        shown = reprlib.Repr()
        shown.maxlevel, shown.maxlist, shown.maxtuple, shown.maxdict, shown.maxset = 3, 8, 8, 8, 8
        shown.maxstring = shown.maxother = shown.maxlong = limit
        text = shown.repr(value)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def quoted(value: object, limit: int = 200) -> str:
    """:func:`capped` with strings in quotes: the bounded form of ``{value!r}`` in a message."""
    return capped(value, limit, quote=True)
