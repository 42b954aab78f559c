"""The entry points this checkout's pyproject.toml declares, for tests that walk the registries.

The installed package metadata is written when the package is installed, so after a type or a converter is added or
its module moves it lags behind the source until the next `pip install -e .`; tests check the checkout itself.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared(group: str) -> dict[str, str]:
    """name -> module of the entry points in `group` ("gentok.models", "gentok.converters")."""
    return dict(tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][group])


def use_checkout_entry_points(monkeypatch) -> None:
    """Make the model registry and the converter dispatcher read this checkout's declarations."""
    from gentok import checkpoint
    from gentok.pretrained import convert

    models, converters = declared("gentok.models"), declared("gentok.converters")
    monkeypatch.setattr(checkpoint, "declared_types", lambda: dict(models))
    monkeypatch.setattr(convert, "_converters", lambda: dict(converters))
