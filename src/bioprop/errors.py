"""Errors raised for bad input. Each message names the argument and says how to fix it."""


class BioPropError(ValueError):
    """A user-facing error: bad argument, bad data, missing files. The CLI prints its message
    without a traceback and exits with status 2."""


class DataUnavailableError(BioPropError):
    """A data set's files are not where we looked and cannot be downloaded."""
