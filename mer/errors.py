"""Errors a user can cause. Each message names the input and says what to do."""


class MERError(Exception):
    """Base class for errors raised by this project on bad input or configuration."""


class InputError(MERError, ValueError):
    """A dataset file, sheet, clip or URI the user gave is missing or malformed."""


class ConfigError(MERError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DecodeError(MERError):
    """A video or frame folder could not be decoded (corrupt, truncated, empty, wrong type)."""


class DecodeTimeout(DecodeError):
    """Decoding did not finish within its time bound (a hung decoder was abandoned)."""


class StorageError(MERError):
    """Reading or writing a local path or s3:// object failed (endpoint down, no access)."""
