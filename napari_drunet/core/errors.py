"""Exceptions for user-facing errors: one-line messages, no traceback needed."""

from __future__ import annotations


class DrunetError(Exception):
    """Base class of errors caused by user input (files, options, models)."""


class InputError(DrunetError):
    """An image, label or option cannot be used."""


class MetricInputError(InputError, ValueError):
    """Arrays of incompatible shapes or invalid metric options (also a ``ValueError``)."""


class DataError(DrunetError):
    """A dataset description or its files are invalid."""


class CheckpointError(DrunetError):
    """A model file is missing, corrupt, unsafe or incompatible."""


class Cancelled(DrunetError):
    """A long job was stopped by the user."""
