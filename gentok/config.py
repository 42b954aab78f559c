"""Frozen dataclass configs that serialise to plain JSON and back without executing code.

Every config class is declared with `@config`, which makes it a frozen dataclass and records it by class name, so a
nested config (a TiTok config holding a quantizer config) can be rebuilt from JSON by looking the name up in a table
of known classes: nothing in a checkpoint can name an arbitrary object.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

_CONFIGS: dict[str, type] = {}
_CLASS_KEY = "_class"


def config(cls=None, /):
    """Class decorator: frozen dataclass + registration for `to_dict` / `from_dict`."""

    def wrap(c):
        c = dataclasses.dataclass(frozen=True)(c)
        if c.__name__ in _CONFIGS and _CONFIGS[c.__name__].__module__ != c.__module__:
            raise TypeError(f"two config classes are named {c.__name__}")
        _CONFIGS[c.__name__] = c
        return c

    return wrap if cls is None else wrap(cls)


def to_dict(cfg) -> dict[str, Any]:
    """A JSON-ready dict of a config; nested configs carry their class name."""
    out: dict[str, Any] = {_CLASS_KEY: type(cfg).__name__}
    for f in dataclasses.fields(cfg):
        out[f.name] = _encode(getattr(cfg, f.name))
    return out


def _encode(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def from_dict(data: dict[str, Any], expected: type | None = None):
    """Rebuild a config written by `to_dict`. Unknown classes or fields raise `ValueError`."""
    if not isinstance(data, dict) or _CLASS_KEY not in data:
        raise ValueError(f"not a gentok config: expected a JSON object with a '{_CLASS_KEY}' key, got {type(data).__name__}")
    name = data[_CLASS_KEY]
    cls = _CONFIGS.get(name)
    if cls is None:
        raise ValueError(f"unknown config class {name!r}; known: {sorted(_CONFIGS)}")
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(f"config class {name!r} is not a {expected.__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known - {_CLASS_KEY}
    if unknown:
        raise ValueError(f"{name}: unknown fields {sorted(unknown)}")
    kwargs = {k: _decode(v) for k, v in data.items() if k != _CLASS_KEY}
    return cls(**kwargs)


def _decode(value):
    if isinstance(value, dict) and _CLASS_KEY in value:
        return from_dict(value)
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)  # configs hold tuples so they stay hashable
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def replace(cfg, **overrides):
    """`dataclasses.replace` that also accepts dotted keys for nested configs: `replace(c, **{"quantizer.dim": 8})`."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    names = {f.name for f in dataclasses.fields(cfg)}
    for key in list(flat) + list(nested):
        if key not in names:
            raise ValueError(f"{type(cfg).__name__} has no field {key!r}; fields: {sorted(names)}")
    for head, sub in nested.items():
        flat[head] = replace(flat.get(head, getattr(cfg, head)), **sub)
    return dataclasses.replace(cfg, **flat)


def parse_override(cfg, key: str, text: str):
    """Parse `text` to the type of field `key` (dotted) of `cfg`, for command-line `--set key=value` overrides."""
    obj = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, p):
            raise ValueError(f"{type(cfg).__name__} has no field {key!r}")
        obj = getattr(obj, p)
    if not dataclasses.is_dataclass(obj) or parts[-1] not in {f.name for f in dataclasses.fields(obj)}:
        raise ValueError(f"{type(cfg).__name__} has no field {key!r}")
    current = getattr(obj, parts[-1])
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            items = [t for t in text.replace("(", "").replace(")", "").split(",") if t.strip()]
            kind = type(current[0]) if current else int
            return tuple(kind(t) for t in items)
        if current is None:
            hints = typing.get_type_hints(type(obj))
            hint = str(hints.get(parts[-1], ""))
            if "int" in hint:
                return int(text)
            if "float" in hint:
                return float(text)
            return text
        return type(current)(text)
    except ValueError:
        raise ValueError(f"cannot parse {text!r} for {key} (currently {current!r})") from None
