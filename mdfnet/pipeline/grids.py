"""Ablation grids: YAML specs → planned cells (pure) → typed loop items carrying the resolved config as data.

Grids (``pipelines/grids/*.yaml``) are mappings::

    name: paper-fusion
    description: ...
    base: [train.epochs=100]            # overrides for every cell (optional)
    include: [paper-variants]           # cells of other grids, in order (optional)
    cells:                              # (optional)
      - {name: concat_conv, feature_set: all, set: [model.fusion=concat_conv]}

A cell's config is ``defaults ← grid base ← device ← pipeline overrides ← cell set``, then the seed. The device
(``train.device``, a compile option of the pipeline: ``cuda`` on the cluster) belongs to where the pipeline runs, so
it beats a grid's base, and a run's overrides beat it (``train.device=cpu`` to debug); a cell may not set it.

:func:`plan_grid` parses every cell once (:func:`mdfnet.training.config_from_sources`: resolved, so
``model.fusion`` is ``none`` for variants without 3D fusion) and drops a cell whose resolved config repeats an
earlier one (``full`` = the union of the paper's ablations, run once each). :class:`GridItem` carries that config
as a plain dict across the KFP boundary; the train and evaluate steps read it back with ``from_dict`` and never
parse text again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdfnet.cells import feature_set_name
from mdfnet.config import from_dict, to_dict
from mdfnet.pipeline.errors import StepError
from mdfnet.training.config import TrainConfig, config_from_sources

log = logging.getLogger(__name__)

DEVICE_KEY = "train.device"
"""The key a grid's cells may not set (:func:`plan_grid` applies the pipeline's device)."""


def load_grids(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*.yaml`` grid of ``folder`` keyed by its ``name`` (which must equal the file stem)."""
    import yaml

    grids: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, dict) or spec.get("name") != path.stem:
            raise StepError(f"grid {path}: expected a mapping with name: {path.stem!r}")
        grids[path.stem] = spec
    return grids


def grid_cells(grids: Mapping[str, Mapping[str, Any]], name: str, _seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Cells of grid ``name`` (includes resolved first): ``[{"name", "base": [...], "set": [...], "feature_set"?}]``
    where ``base`` collects the ``base`` overrides of the including grids (outermost first); cells with the
    same ``base + set`` text as an earlier cell are dropped."""
    if name not in grids:
        raise StepError(f"unknown grid {name!r}; expected one of {sorted(grids)}")
    if name in _seen:
        raise StepError(f"grid {name!r} includes itself ({' -> '.join((*_seen, name))})")
    spec = grids[name]
    base = [str(s) for s in spec.get("base") or []]
    cells: list[dict[str, Any]] = []
    for inc in spec.get("include") or []:
        cells += [{**c, "base": base + c["base"]} for c in grid_cells(grids, inc, (*_seen, name))]
    for c in spec.get("cells") or []:
        if not isinstance(c, dict) or not c.get("name"):
            raise StepError(f"grid {name!r}: each cell needs a name and a set list, got {c!r}")
        cell_set = [str(s) for s in c.get("set") or []]
        if any(s.partition("=")[0].strip() == DEVICE_KEY for s in cell_set):
            raise StepError(f"grid {name!r}: cell {c['name']!r} sets {DEVICE_KEY}; the device is where the pipeline "
                            f"runs, not a cell: set it in the grid's base, the pipeline's compile options or the "
                            f"run's overrides")
        cells.append({**c, "base": base, "set": cell_set})
    out, seen_sets, seen_names = [], set(), set()
    for c in cells:
        key = (*c["base"], *c["set"])
        if key in seen_sets:
            continue
        if c["name"] in seen_names:
            raise StepError(f"grid {name!r}: two different cells are named {c['name']!r}")
        seen_sets.add(key)
        seen_names.add(c["name"])
        out.append(c)
    if not out:
        raise StepError(f"grid {name!r} has no cells")
    return out


@dataclass(frozen=True)
class PlannedCell:
    """One cell of a grid: its name, resolved config (seed not yet set) and labels (:data:`~mdfnet.tracking_names.LABEL_KEYS`)."""

    name: str
    config: TrainConfig
    labels: dict[str, str]


def plan_grid(grids: Mapping[str, Mapping[str, Any]], grid: str, overrides: Sequence[str] = (),
              device: str | None = None) -> list[PlannedCell]:
    """The cells of ``grid`` with ``device`` (``train.device``; None: the grid's) and then ``overrides`` applied
    (module docstring), each parsed and validated once; a cell whose resolved config equals an earlier cell's is
    dropped (logged). Pure: no tracking, no files."""
    planned: list[PlannedCell] = []
    seen: list[dict[str, Any]] = []
    on_device = [f"{DEVICE_KEY}={device}"] if device is not None else []
    for cell in grid_cells(grids, grid):
        cfg = config_from_sources(None, [*cell["base"], *on_device, *map(str, overrides), *cell["set"]])
        resolved = to_dict(cfg)
        if resolved in seen:  # e.g. `full`: fusion-sum is variant-mdf; baselines of every fusion are one
            log.info("grid %s: cell %s repeats an earlier cell's config; skipped", grid, cell["name"])
            continue
        seen.append(resolved)
        labels = {"variant": cfg.model.variant, "fusion": cfg.model.fusion, "backbone": cfg.model.backbone,
                  "feature_set": str(cell.get("feature_set")
                                     or feature_set_name(cfg.data.features, cfg.data.shuffle_clinical))}
        planned.append(PlannedCell(cell["name"], cfg, labels))
    return planned


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class GridItem:
    """One training run of the pipeline's loop: a planned cell × seed and where it is tracked.

    ``config`` is the resolved :class:`~mdfnet.training.TrainConfig` (seed included) as a plain dict; read it with
    :meth:`train_config`. :meth:`to_dict` / :meth:`from_dict` cross the KFP boundary (JSON).
    """

    cell: str
    seed: int
    grid: str
    config: dict[str, Any]
    labels: dict[str, str]
    parent_run_id: str = ""
    experiment_id: str = ""
    run_name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.run_name:
            object.__setattr__(self, "run_name", f"{self.cell}-s{self.seed}")

    @classmethod
    def of(cls, planned: PlannedCell, seed: int, grid: str, parent_run_id: str = "",
           experiment_id: str = "") -> GridItem:
        """The item of ``planned`` × ``seed``. Keys whose value is None are left out of ``config`` (KFP's loop
        items cannot hold nulls; those keys default to None), and the round trip is checked."""
        cfg = dataclasses.replace(planned.config, seed=int(seed))
        data = _without_none(to_dict(cfg))
        if from_dict(TrainConfig, data) != cfg:
            raise StepError(f"cell {planned.name!r}: its config does not survive leaving out null values "
                            "(a key whose default is not None was set to None)")
        return cls(planned.name, int(seed), grid, data, dict(planned.labels), parent_run_id, experiment_id)

    def train_config(self) -> TrainConfig:
        return from_dict(TrainConfig, self.config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GridItem:
        """Read a loop item back (JSON numbers may arrive as floats); errors name the missing keys."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in ("cell", "seed", "grid", "config", "labels") if k not in data]
        if missing:
            raise StepError(f"grid item: missing key(s) {missing}; got {sorted(data)} (expected {names})")
        return cls(**{**{k: data[k] for k in names if k in data}, "seed": int(data["seed"])})
