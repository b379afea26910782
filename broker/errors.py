"""The broker's errors: one base, :class:`BrokerError`.

Bad input from the wire never raises out of the broker's loop: it is answered, counted
and logged. These errors are for its own parts, such as the model store refusing a model.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error the ``broker`` package raises."""


class ModelRefused(BrokerError, ValueError):
    """A model the store will not take: too large, or its text does not match its hash."""
