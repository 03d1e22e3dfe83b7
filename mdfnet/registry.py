"""Deprecated import path: the champion rule moved to :mod:`mdfnet.champion` ("registry" now means only the
container image registry; the MLflow one is called the MLflow Model Registry). Kept for one round because the
README's "What changed" pointed here; to be removed like the ``mdfnet.train`` path was."""

from __future__ import annotations

import warnings

from mdfnet.champion import CHAMPION_ALIAS, ChampionDecision, champion_version, register_champion

warnings.warn("mdfnet.registry is deprecated: import mdfnet.champion", DeprecationWarning, stacklevel=2)

__all__ = ["CHAMPION_ALIAS", "ChampionDecision", "champion_version", "register_champion"]
