r"""Homoscedastic-uncertainty weighting of the detector's losses (Kendall, Gal & Cipolla, 2018).

We use the paper's objective exactly (MDF-Net, "Training" section):

.. math::

    \mathcal{L}_{total} = \sum_{l} \frac{1}{2\alpha_l^2} L_l + \log \alpha_l^2

parameterised, for numerical stability, by the learnable log-variance :math:`s_l = \log \alpha_l^2`
(initialised to 0, i.e. :math:`\alpha_l = 1`):

.. math::

    \mathcal{L}_{total} = \sum_{l} \tfrac{1}{2} e^{-s_l} L_l + s_l .

For fixed :math:`L_l > 0` the term is minimised at :math:`s_l = \log(L_l / 2)`. (The authors' code used
``0.5 / σ² · L + log(1 + σ²)`` instead; we follow the published formula.) The loss terms are torchvision's:
``loss_classifier``, ``loss_box_reg``, ``loss_mask`` (only with the mask head), ``loss_objectness``,
``loss_rpn_box_reg``.

:func:`uncertainty_weighted_loss` is the pure function; :class:`UncertaintyWeightedLoss` holds one ``s_l``
parameter per loss name. :class:`SumLoss` (plain sum, no parameters) is the unweighted alternative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from mdfnet.model import catalog
from mdfnet.model.catalog import check_table

BOX_LOSSES: tuple[str, ...] = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
MASK_LOSS = "loss_mask"


def loss_names(use_mask: bool) -> tuple[str, ...]:
    """The detector's loss keys: 4 without the mask head, 5 with it."""
    return BOX_LOSSES + ((MASK_LOSS,) if use_mask else ())


def uncertainty_weighted_loss(losses: Mapping[str, torch.Tensor], log_vars: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``Σ_l 0.5·exp(-s_l)·L_l + s_l`` over the names of ``losses``; ``log_vars[l] = s_l = log α_l²``.

    Raises KeyError naming a loss without a log-variance (and vice versa).
    """
    missing = sorted(set(losses) - set(log_vars))
    extra = sorted(set(log_vars) - set(losses))
    if missing or extra:
        raise KeyError(f"loss terms {sorted(losses)} do not match log-variances {sorted(log_vars)} "
                       f"(missing {missing}, extra {extra})")
    terms = [0.5 * torch.exp(-log_vars[k]) * losses[k] + log_vars[k] for k in sorted(losses)]
    return torch.stack(terms).sum()


class UncertaintyWeightedLoss(nn.Module):
    """Loss dict → scalar with learnable log-variances ``log_vars[name]`` (scalar parameters, init 0)."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.log_vars = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in names})

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return uncertainty_weighted_loss(losses, dict(self.log_vars.items()))

    def weights(self) -> dict[str, float]:
        """Current per-loss weight ``1/(2α²) = 0.5·exp(-s)`` and ``α`` as floats, for logging."""
        out: dict[str, float] = {}
        for name, s in self.log_vars.items():
            v = float(s.detach())
            out[f"log_var/{name}"] = v
            out[f"sigma/{name}"] = math.exp(0.5 * v)
        return out


class SumLoss(nn.Module):
    """Unweighted ``Σ_l L_l`` (no parameters), for ablations against the uncertainty weighting."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = tuple(names)

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if set(losses) != set(self.names):
            raise KeyError(f"loss terms {sorted(losses)} do not match expected {sorted(self.names)}")
        return torch.stack([losses[k] for k in sorted(losses)]).sum()

    def weights(self) -> dict[str, float]:
        return {}


LOSS_WEIGHTINGS = {"uncertainty": UncertaintyWeightedLoss, "sum": SumLoss}
"""Loss weighting name → class taking the loss names (names: :data:`mdfnet.model.catalog.LOSS_WEIGHTINGS`)."""
check_table("loss weighting", LOSS_WEIGHTINGS, catalog.LOSS_WEIGHTINGS)
