"""Original user and item ids: one rule for their type, shared by the training loaders and batch scoring, so that
recommendations join back to the data they came from (integer ids stay integers, string ids stay strings).

Inside recsys an id is compared as its canonical string ("42", "m1"), whatever type each reader produced; the
id's *kind* ("int" or "str") is remembered per column and restored on output.

- Typed formats (Parquet, JSON lines, DataFrames) keep the type they carry: an integer column (or a float column whose
  values are all whole numbers, what pandas makes of an integer column with gaps) holds integer ids; anything else
  holds string ids, even when the strings look like numbers.
- Text formats (CSV, TSV, RecBole) carry no types: a column whose every value is a canonical decimal integer ("42",
  "-7"; not "007" or "4.0", which would lose their spelling) holds integer ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

INT, STR = "int", "str"
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]{0,18})")  # at most 19 digits, then checked against int64


def is_canonical_int(s: str) -> bool:
    """True for the spelling `str(int(s))` of an int64 ("42", "-7"), False for "007", "4.0", " 4", "x"."""
    return bool(_CANONICAL_INT.fullmatch(s)) and -(2 ** 63) <= int(s) < 2 ** 63


def text_kind(values: Iterable[str]) -> str:
    """The kind of a column read from a text format (see the module docstring); an empty column is "str"."""
    values = list(values)
    return INT if values and all(is_canonical_int(v) for v in values) else STR


def _is_int_value(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_whole_float(v) -> bool:
    return isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer()


def value_kind(values: Iterable) -> str:
    """The kind of ids read from a typed format: "int" when every value is an integer (or a whole float)."""
    values = list(values)
    return INT if values and all(_is_int_value(v) or _is_whole_float(v) for v in values) else STR


def column_kind(col: pd.Series) -> str:
    """The kind of a DataFrame column of ids, from its dtype (object columns are inspected value by value)."""
    if pd.api.types.is_bool_dtype(col.dtype):
        return STR
    if pd.api.types.is_integer_dtype(col.dtype):
        return INT
    return value_kind(col.dropna()) if len(col.dropna()) else STR


def id_string(v) -> str:
    """The canonical string of one id: 42, 42.0, np.int64(42) and "42" all give "42"."""
    if _is_int_value(v) or _is_whole_float(v):
        return str(int(v))
    return str(v)


def id_strings(col: pd.Series) -> np.ndarray:
    """Canonical strings (object array) of a column of ids; missing values must be removed first."""
    if pd.api.types.is_integer_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return col.astype("int64").astype(str).to_numpy(dtype=object)
    return np.asarray([id_string(v) for v in col], dtype=object)


def typed_ids(strings, kind: str) -> pd.Series:
    """Canonical strings back to ids of `kind`: int64 for "int", Python strings for "str"."""
    s = pd.Series(list(strings) if not isinstance(strings, pd.Series) else strings, dtype=object)
    if kind == INT:
        return s.astype("int64")
    if kind == STR:
        return s.astype(str)
    raise ValueError(f"id kind must be {INT!r} or {STR!r}, got {kind!r}")


def id_dtype(kind: str) -> str:
    """The pandas dtype of an output id column of `kind` ("Int64" allows the missing item of an error row)."""
    return "Int64" if kind == INT else "string"
