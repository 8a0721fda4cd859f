"""`edgemnv2.convert`'s flat keywords from before it took a recipe and a budget object, mapped onto
them, so that scripts written for earlier versions keep working (with a DeprecationWarning that
names the new spelling). Nothing here is new behaviour: each keyword means what it meant."""

import warnings
from pathlib import Path

from conversion import options_from_aliases
from conversion.recourse import STEPS, AccuracyBudget
from quantization.recipe import QatRecipe, QuantRecipe

from .errors import UserError

# keyword -> the QuantRecipe field it sets
RECIPE_KEYWORDS = {"calib_size": "calibration_size", "observer": "observer", "per_channel": "per_channel", "equalization": "equalization"}
# keyword -> the AccuracyBudget field it sets (qat_epochs and qat_minutes make its QatRecipe)
BUDGET_KEYWORDS = {"max_drop": "points", "accuracy_data": "data", "accuracy_limit": "limit", "gates": "gates", "recourse_steps": "steps",
                   "train_data": "train_data", "allowed_precisions": "allowed_precisions", "threads": "threads", "on_search": "log",
                   "qat_epochs": "epochs", "qat_minutes": "minutes"}
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
    budget_settings = {k: v for k, v in keywords.items() if k in BUDGET_KEYWORDS and (v is not None or k == "accuracy_limit")}  # limit None: every image
    if budget is not None and budget_settings.keys() - {"threads"}:  # threads alone once also set the old API's other runtimes
        raise UserError(f"convert(): give budget= or {', '.join(budget_settings)}=, not both")
    if budget_settings.keys() & {"max_drop", "gates"}:
        budget = _budget(budget_settings)
    elif budget_settings.get("allowed_precisions"):
        raise UserError("--allow-precision applies only to the --max-drop search (give --max-drop or --gates)")
    aliases = {k: keywords[k] for k in ALIASES if k in keywords}
    if aliases:
        target_options = options_from_aliases(aliases, target_options)
    return recipe, budget, target_options


def _budget(settings: dict) -> AccuracyBudget:
    qat = QatRecipe(**{BUDGET_KEYWORDS[k]: settings.pop(k) for k in ("qat_epochs", "qat_minutes") if k in settings})
    fields = {BUDGET_KEYWORDS[k]: v for k, v in settings.items()}
    if "data" in fields:
        fields["data"] = Path(fields["data"])
    if "train_data" in fields:
        fields["train_data"] = Path(fields["train_data"])
    steps = tuple(fields.pop("steps", ()) or ())
    return AccuracyBudget(**fields, qat=qat, steps=steps or STEPS, steps_asked=bool(steps))
