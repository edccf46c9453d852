"""Exceptions digitlab raises for problems a user can fix (bad data, bad paths, bad arguments).

The CLI prints these as one line and exits non-zero; anything else is a bug.
"""


class DigitlabError(Exception):
    """Base class: a clear, user-facing problem."""


class DataError(DigitlabError):
    """A dataset file or folder is missing, malformed or fails its checksum."""


class ModelDirError(DigitlabError):
    """A model directory is missing, corrupt or incompatible."""


class ImageError(DigitlabError):
    """An input image cannot be read or decoded."""


class ConfigError(DigitlabError, ValueError):
    """A training or command option is invalid."""


class ImageLimitError(ImageError):
    """An image over a limit (pixels, frames): readable, but refused before decoding."""
