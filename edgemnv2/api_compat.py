"""`edgemnv2.convert`'s flat keywords from before it took a recipe and a budget object, mapped onto
them, so that scripts written for earlier versions keep working (with a DeprecationWarning that
names the new spelling). Nothing here is new behaviour: each keyword means what it meant."""

import warnings

from conversion import options_from_aliases
from conversion.recourse import AccuracyBudget, budget_from_flags
from quantization.recipe import QuantRecipe

from .errors import UserError

# keyword -> the QuantRecipe field it sets
RECIPE_KEYWORDS = {"calib_size": "calibration_size", "observer": "observer", "per_channel": "per_channel", "equalization": "equalization"}
# the budget's keywords: convert's flag names (conversion.recourse.budget_from_flags takes them as they are)
BUDGET_KEYWORDS = ("max_drop", "accuracy_data", "accuracy_limit", "gates", "recourse_steps", "train_data", "allowed_precisions", "threads",
                   "on_search", "qat_epochs", "qat_minutes")
ALIASES = ("server_engine",)  # target options' older flags (conversion.option_aliases)


def older_spelling(keywords: dict, recipe: QuantRecipe | None, budget: AccuracyBudget | None, target_options: dict | None):
    """-> (recipe, budget, target_options) with the older keywords applied. Mixing a keyword with
    the object it now belongs to is refused: which of the two was meant is not ours to guess."""
    unknown = sorted(set(keywords) - set(RECIPE_KEYWORDS) - set(BUDGET_KEYWORDS) - set(ALIASES))
    if unknown:
        raise TypeError(f"convert() got an unexpected keyword argument {unknown[0]!r}")
    warnings.warn(f"convert({', '.join(f'{k}=' for k in keywords)}) is the older spelling: pass recipe=QuantRecipe(...), "
                  "budget=AccuracyBudget(...) and target_options={...} instead (docs/extending.md)", DeprecationWarning, stacklevel=3)
    recipe_settings = {RECIPE_KEYWORDS[k]: v for k, v in keywords.items() if k in RECIPE_KEYWORDS}
    if recipe_settings:
        if recipe is not None:
            raise UserError(f"convert(): give recipe= or {', '.join(k for k in keywords if k in RECIPE_KEYWORDS)}=, not both")
        recipe = QuantRecipe(**recipe_settings)
    budget_settings = {k: v for k, v in keywords.items() if k in BUDGET_KEYWORDS}
    given = {k for k, v in budget_settings.items() if v is not None or k == "accuracy_limit"} - {"threads"}  # limit None: every image
    if budget is not None and given:  # threads alone once also set the old API's other runtimes
        raise UserError(f"convert(): give budget= or {', '.join(sorted(given))}=, not both")
    if budget is None:
        budget = budget_from_flags(**budget_settings)
    aliases = {k: keywords[k] for k in ALIASES if k in keywords}
    if aliases:
        target_options = options_from_aliases(aliases, target_options)
    return recipe, budget, target_options

