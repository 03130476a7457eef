"""The exceptions funnel raises: one family, each message a sentence a user can act on."""

from __future__ import annotations


class FunnelError(Exception):
    """Base class: every error funnel raises on purpose is one of these."""


class InputError(FunnelError):
    """Bad user input: a corpus, a query, an option or a dataset that cannot be used as given."""


class IndexFormatError(FunnelError):
    """An index folder that is missing, incomplete, corrupt or from an unsupported format version."""


class ModelError(FunnelError):
    """A model that cannot be loaded offline or does not fit the index."""
