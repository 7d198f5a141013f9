"""Recipes that ship with slimkit (`slimkit recipes list|show NAME`)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from slimkit.core.errors import InvalidConfigError


def _folder() -> Path:
    return Path(str(files("slimkit.pipeline") / "recipes"))


def list_recipes() -> list[str]:
    """Names of the bundled recipes."""
    return sorted(p.stem for p in _folder().glob("*.yaml"))


def bundled_recipe_path(name: str) -> Path:
    """The file of bundled recipe ``name``; `InvalidConfigError` lists the valid names."""
    path = _folder() / f"{name}.yaml"
    if not path.is_file():
        raise InvalidConfigError(
            f"{name!r} is neither a .yaml file nor a bundled recipe; bundled recipes: {', '.join(list_recipes())}"
        )
    return path


def show_recipe(name: str) -> str:
    """The YAML text of bundled recipe ``name``."""
    return bundled_recipe_path(name).read_text()
