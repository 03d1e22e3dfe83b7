"""Errors of training: the messages say why and what to do."""

from __future__ import annotations


class TrainError(RuntimeError):
    """Training cannot start or continue; the message says why."""


class NonFiniteLossError(TrainError):
    """A loss term became NaN/inf; the message names the step and the term. ``last.pt`` is left untouched."""
