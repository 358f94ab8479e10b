"""Exceptions that carry a message meant for people (the CLI prints them without a traceback)."""


class VivitError(Exception):
    """Base class for errors caused by input: a bad config, a missing file, a wrong shape."""


class ConfigError(VivitError, ValueError):
    """An invalid configuration value; the message names the field and the allowed values."""


class DataError(VivitError):
    """A dataset or video that cannot be used at all (a single bad file is skipped instead)."""


class BadVideoError(DataError):
    """One video file that cannot be used (skipped where a dataset or a list of files holds it): the message names
    the file, `reason` does not (for a warning that names the file already)."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"cannot decode {path}: {reason}")
        self.path, self.reason = str(path), reason


def failure_reason(error: BaseException) -> str:
    """A short reason without the file name: ffmpeg's or the OS's message without its `[Errno N] ...: 'path'`."""
    if isinstance(error, BadVideoError):
        return error.reason
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class InputShapeError(VivitError, ValueError):
    """A tensor whose shape does not fit the model; the message gives expected and given shapes."""
