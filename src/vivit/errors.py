"""Exceptions that carry a message meant for people (the CLI prints them without a traceback)."""


class VivitError(Exception):
    """Base class for errors caused by input: a bad config, a missing file, a wrong shape."""


class ConfigError(VivitError, ValueError):
    """An invalid configuration value; the message names the field and the allowed values."""


class DataError(VivitError):
    """A dataset or video that cannot be used at all (a single bad file is skipped instead)."""


class InputShapeError(VivitError, ValueError):
    """A tensor whose shape does not fit the model; the message gives expected and given shapes."""
