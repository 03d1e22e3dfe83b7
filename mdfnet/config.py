"""Typed configuration: nested dataclasses loaded from YAML once, with ``key=value`` overrides.

Every command's configuration is a dataclass tree (``PreprocessConfig`` in :mod:`mdfnet.data.preprocess`,
``TrainConfig`` in :mod:`mdfnet.training.config` …). This module is the one place where YAML/override text is
translated into those types:

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Inner:
...     lr: float = 1e-3
>>> @dataclass
... class Outer:
...     seed: int = 0
...     train: Inner = field(default_factory=Inner)
>>> cfg = load_config(Outer, overrides=["train.lr=0.01", "seed=3"])
>>> (cfg.seed, cfg.train.lr)
(3, 0.01)

Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key, the value and
what was expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names it and what was expected."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or override text) to type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, key)
    if origin is typing.Literal:
        return _as_literal(value, typing.get_args(tp), key)
    if origin in (list, tuple):
        return _coerce_sequence(value, tp, key)
    if origin is dict:
        value = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    scalar = _SCALARS.get(tp)
    return scalar(value, key) if scalar else value


_YAML_BOOL_WORDS = {False: ("off", "false", "no"), True: ("on", "true", "yes")}
"""YAML 1.1 (PyYAML) reads these unquoted words as booleans: ``amp: off`` arrives as ``False``."""


def _as_literal(value: Any, allowed: tuple[Any, ...], key: str) -> Any:
    """``value`` if it is one of ``allowed``; a YAML boolean stands for the one allowed word that YAML reads as it
    (``train.amp: off`` and ``--set train.amp=off`` both arrive as ``False`` and mean ``"off"``)."""
    if isinstance(value, bool):  # compared by identity: True == 1 must not match a literal 1
        if any(a is value for a in allowed):
            return value
        words = [w for w in _YAML_BOOL_WORDS[value] if w in allowed]
        if len(words) == 1:
            return words[0]
    elif value in allowed:
        return value
    raise ConfigError(f"{key}: value {value!r} is not one of {list(allowed)}")


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
    """``X | None`` (``None``, ``"none"``, ``"null"``, ``"~"`` → None) and other unions: the first member that fits."""
    args = typing.get_args(tp)
    if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~"))):
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(value, a, key)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(f"{key}: value {value!r} does not match {tp}: {'; '.join(errors)}")


def _coerce_sequence(value: Any, tp: Any, key: str) -> list | tuple:
    """A list or tuple from a YAML list or override text (``[a, b]`` or ``a,b``), items coerced."""
    if isinstance(value, str):
        value = yaml.safe_load(value) if value.strip().startswith("[") else [
            v for v in value.split(",") if v.strip() != ""
        ]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    items = [_coerce(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple else items


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")


def _as_number(kind: type) -> typing.Callable[[Any, str], Any]:
    """Coercer to ``int`` (whole numbers only: 3, 3.0, "3") or ``float`` (any number or numeric text); never bool."""
    what = "an integer" if kind is int else "a number"

    def coerce(value: Any, key: str) -> Any:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = kind(value)
        if isinstance(value, float) and kind is int and value.is_integer():
            value = int(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int)):
            return kind(value)
        raise ConfigError(f"{key}: expected {what}, got {value!r}")

    return coerce


def _as_str(value: Any, key: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: expected a string, got {value!r}")


_SCALARS: dict[Any, typing.Callable[[Any, str], Any]] = {
    bool: _as_bool, int: _as_number(int), float: _as_number(float), str: _as_str, Any: lambda value, key: value,
}
"""Scalar type → coercer ``(value, key) → value`` (raises :class:`ConfigError` naming the key)."""


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) nested mapping; unknown keys raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + u for u in unknown]}; expected one of {sorted(prefix + n for n in names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) of a config dataclass, suitable for YAML/JSON."""

    def conv(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value) with the value parsed as YAML scalar text."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. model.fusion=sum)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of nested mapping ``data`` with ``key.path=value`` overrides applied."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for p in path[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at top level, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults of ``cls`` ← ``base`` mapping ← YAML file ``path`` ← ``overrides`` (``a.b=v``)."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _deep_merge(data, load_yaml(path))
    data = apply_overrides(data, list(overrides))
    return from_dict(cls, data)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
