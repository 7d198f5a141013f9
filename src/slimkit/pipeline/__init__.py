"""Multi-stage compression: recipes, `compress`, stage results."""

from slimkit.pipeline.bundled import list_recipes, show_recipe
from slimkit.pipeline.compress import CompressResult, StageResult, compress
from slimkit.pipeline.recipe import Recipe, Stage, Target, load_recipe, parse_recipe

__all__ = [
    "CompressResult",
    "Recipe",
    "Stage",
    "StageResult",
    "Target",
    "compress",
    "list_recipes",
    "load_recipe",
    "parse_recipe",
    "show_recipe",
]
