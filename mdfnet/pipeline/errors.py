"""The pipeline's error: what a step raises when its inputs cannot be used."""

from __future__ import annotations


class StepError(RuntimeError):
    """A step got inputs it cannot use; the message names the value and what was expected."""
