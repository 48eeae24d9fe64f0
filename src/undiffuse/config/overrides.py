"""``key=value`` overrides and (de)serialisation of a :class:`~undiffuse.config.sections.RunConfig`: every
value is parsed and checked against the field's declared type (see :mod:`undiffuse.config`)."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import fields, replace
from typing import Any, Iterable, Union

from undiffuse.config.sections import SECTIONS, RunConfig, section_type
from undiffuse.errors import ConfigError, brief

__all__ = ["apply_overrides", "set_value", "config_keys", "to_dict", "from_dict", "diff_configs"]


def config_keys() -> list[str]:
    """Every valid dotted key, e.g. ``train.lr``."""
    return [f"{s}.{f.name}" for s in SECTIONS for f in fields(section_type(s))]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_overrides(cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``"section.field=value"`` strings; values are parsed by the field's type.

    Lists are comma-separated (``model.channel_mult=1,2,2``), mappings are ``k:v,k:v`` or JSON,
    ``none`` clears an optional field, booleans are true/false/1/0/yes/no.
    """
    changes: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value — write e.g. train.lr=2e-4")
        key, text = item.split("=", 1)
        section, name, typ = _field(key.strip())
        changes.setdefault(section, {})[name] = _parse(text.strip(), typ, key.strip())
    # each section is rebuilt (and validated) once, so the order of related overrides does not matter
    return replace(cfg, **{s: replace(getattr(cfg, s), **kw) for s, kw in changes.items()})


def _field(key: str) -> tuple[str, str, Any]:
    """(section, field name, declared type) of a dotted key; ConfigError naming the valid keys."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(
            f"unknown config key {brief(key)} — keys are section.field with section one of {', '.join(SECTIONS)}"
        )
    if parts[1] not in {f.name for f in fields(section_type(parts[0]))}:
        valid = [k for k in config_keys() if k.startswith(parts[0] + ".")]
        raise ConfigError(f"unknown config key {brief(key)} — valid {parts[0]} keys: {', '.join(valid)}")
    return parts[0], parts[1], _hints(section_type(parts[0]))[parts[1]]


def set_value(cfg: RunConfig, key: str, value: Any, parse: bool = False) -> RunConfig:
    """A copy of ``cfg`` with the dotted ``key`` set (``value`` parsed from text if ``parse``)."""
    section, name, typ = _field(key)
    new = _parse(value, typ, key) if parse else _coerce(value, typ, key)
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: new})})


_NONE = ("none", "null", "")
_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _union_args(typ: Any) -> tuple:
    origin = typing.get_origin(typ)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(typ, types.UnionType)):
        return typing.get_args(typ)
    return ()


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def _parse(text: str, typ: Any, key: str) -> Any:
    """Parse override text into a value of type ``typ``."""
    args = _union_args(typ)
    if args:  # Optional[X]
        if text.lower() in _NONE:
            return None
        return _parse(text, next(a for a in args if a is not type(None)), key)
    origin = typing.get_origin(typ)
    if origin is tuple:
        items = [s for s in text.strip("()[] ").split(",") if s.strip()]
        return _coerce([_parse_scalar(s.strip(), _tuple_item(typ, i), key) for i, s in enumerate(items)], typ, key)
    if origin is dict:
        if text.lstrip().startswith("{"):
            try:
                return _coerce(json.loads(text), typ, key)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{key}: {brief(text)} is not valid JSON ({e.msg}) — write k:v,k:v or a JSON object") from None
        pairs = [p.split(":", 1) for p in text.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(f"{key}: {brief(text)} is not a mapping — write k:v,k:v (e.g. beta_start:1e-4,beta_end:0.02)")
        vtyp = typing.get_args(typ)[1]
        return {k.strip(): _parse_scalar(v.strip(), vtyp, key) for k, v in pairs}
    return _parse_scalar(text, typ, key)


def _tuple_item(typ: Any, i: int) -> Any:
    args = typing.get_args(typ)
    return args[0] if len(args) == 2 and args[1] is Ellipsis else args[min(i, len(args) - 1)]


def _finite(value: float, key: str) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{key} = {value} is not a finite number — give a finite value")
    return value


def _parse_scalar(text: str, typ: Any, key: str) -> Any:
    bad = ConfigError(f"{key} expects {_type_name(typ)}, got {brief(text)} — give a value of that type")
    if typ is bool:
        if text.lower() not in _BOOLS:
            raise bad
        return _BOOLS[text.lower()]
    if typ is int:
        try:
            f = float(text)
        except ValueError:
            raise bad from None
        if not f.is_integer():
            raise bad
        return int(f)
    if typ is float:
        try:
            value = float(text)
        except ValueError:
            raise bad from None
        return _finite(value, key)
    return text


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check (and gently convert: list → tuple, int → float) an already-typed value, e.g. from JSON."""
    args = _union_args(typ)
    if args:
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    bad = ConfigError(f"{key} expects {_type_name(typ)}, got {brief(value)} — give a value of that type")
    origin = typing.get_origin(typ)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args_t = typing.get_args(typ)
        if not (len(args_t) == 2 and args_t[1] is Ellipsis) and len(value) != len(args_t):
            raise ConfigError(f"{key} expects {len(args_t)} values, got {len(value)} — e.g. {','.join('1' * len(args_t))}")
        return tuple(_coerce(v, _tuple_item(typ, i), key) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        vtyp = typing.get_args(typ)[1]
        return {str(k): _coerce(v, vtyp, key) for k, v in value.items()}
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), key)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if typ in (int, str, bool) and type(value) is not typ:
        raise bad
    return value


def to_dict(cfg: RunConfig) -> dict:
    """A JSON-ready nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig` from :func:`to_dict` output; unknown keys and wrong types are refused.

    Missing keys take the dataclass defaults (so configs saved by older versions still load).
    """
    if not isinstance(d, dict):
        raise ConfigError("a run configuration must be a JSON object — check config.json")
    unknown = set(d) - set(SECTIONS) - {"preset"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {brief(sorted(map(str, unknown)))} — valid: {', '.join(SECTIONS)}, preset")
    kw: dict[str, Any] = {}
    for s in SECTIONS:
        sub = d.get(s, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"config section {s!r} must be an object")
        hints = _hints(section_type(s))
        for k in sub:
            if k not in hints:
                raise ConfigError(f"unknown config key {brief(f'{s}.{k}')} — valid keys: {', '.join(config_keys())}")
        kw[s] = section_type(s)(**{k: _coerce(v, hints[k], f"{s}.{k}") for k, v in sub.items()})
    return RunConfig(**kw, preset=str(d.get("preset", "custom")))


def diff_configs(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ: {key: (a_value, b_value)}."""
    out = {}
    for s in SECTIONS:
        for f in fields(section_type(s)):
            va, vb = getattr(getattr(a, s), f.name), getattr(getattr(b, s), f.name)
            if va != vb:
                out[f"{s}.{f.name}"] = (va, vb)
    return out
