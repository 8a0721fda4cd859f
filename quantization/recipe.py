"""What a quantization is asked to do, as data: the post-training recipe (observer, weight granularity,
calibration size, layers kept in float, equalization) and the quantization-aware fine-tuning recipe.
Below every quantizer (ptq.py, qat.py) and recorded whole in each int8 manifest."""

import dataclasses
from dataclasses import dataclass

from edgemnv2.errors import UserError, did_you_mean

RANGES = ("trained", "calibrated")
LOSSES = ("task", "distill")


@dataclass(frozen=True)
class QatRecipe:
    """How to fine-tune. `images_per_epoch` None: the whole training split each epoch."""

    epochs: int = 2
    # AdamW's peak rate. torchvision's ImageNet QAT uses 1e-4 at a far larger batch; at batch 16 on a small
    # training split, 2 epochs at 1e-4 barely moved per-tensor int8 on the test classifier (Xeon with AMX,
    # TFLite, 600 val images: drop 1.50 -> 1.17), where 2e-4 reached 0.50 (3e-4: 0.67; 5e-4: 1.33;
    # 1e-3: 2.50; ExecuTorch alike: 1.17, 0.50, 0.67)
    lr: float = 2e-4
    batch_size: int = 16
    seed: int = 0
    images_per_epoch: int | None = None
    # a time budget for one fine-tuning run: training stops after the batch that passes it (the
    # manifest then records the images actually seen); None: the epochs run whole
    minutes: float | None = None
    # "trained": the artifact quantizes with the ranges training learned, where the target's graph is
    # the trained one (the bare network; not an in-graph decode or app input around it);
    # "calibrated": the fine-tuned weights, calibrated like any model
    ranges: str = "trained"
    # "task": the task's training loss on the split's labels; "distill": the fp32 model's own outputs on
    # the same images are the targets (the task's distillation loss), which is what a drop against
    # that fp32 model measures, and which cannot drift towards the labels and away from it
    loss: str = "task"

    def __post_init__(self):
        if self.epochs < 1:
            raise UserError("--qat-epochs must be at least 1")
        if self.minutes is not None and not self.minutes > 0:
            raise UserError("--qat-minutes must be more than 0")
        if not self.lr > 0:
            raise UserError("the QAT learning rate must be positive")
        if self.ranges not in RANGES:
            raise UserError(f"QAT ranges must be one of {', '.join(RANGES)}, not {self.ranges!r}")
        if self.loss not in LOSSES:
            raise did_you_mean(self.loss, LOSSES, "QAT loss")


OBSERVER_NAMES = ("histogram", "minmax", "moving_average")
EQUALIZATIONS = ("none", "cle", "cle+bc")  # quantization/equalize.py: cross-layer equalization, then bias correction
ENGINES = ("x86", "onednn", "qnnpack")


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize. The defaults are the well-behaved recipe; the fields exist so a user (or a
    test) can also build a deliberately bad one and watch the gates catch it."""

    observer: str = "histogram"  # activation observer
    per_channel: bool = True  # per-channel symmetric weights (per-tensor hurts depthwise convs)
    calibration_size: int = 128  # images from the calibration set
    # Submodules (qualified names) every quantizer leaves in float: layers kept in float for
    # accuracy, and a detector's in-graph decode (max-pool, top-K and gathers are not int8 ops).
    float_modules: tuple[str, ...] = ()
    equalization: str = "none"  # applied to the folded fp32 model before quantizing (conversion/pipeline.py)
    qat: QatRecipe | None = None  # fine-tune under the target's fake quantization first (quantization/qat.py)

    def __post_init__(self):
        if not isinstance(self.float_modules, tuple):  # a list from a caller: hashable (recipes key caches) and joinable with tuples
            object.__setattr__(self, "float_modules", (self.float_modules,) if isinstance(self.float_modules, str) else tuple(self.float_modules))
        if self.observer not in OBSERVER_NAMES:
            raise did_you_mean(self.observer, OBSERVER_NAMES, "observer")
        if self.equalization not in EQUALIZATIONS:
            raise did_you_mean(self.equalization, EQUALIZATIONS, "equalization")
        if self.calibration_size < 1:
            raise UserError("calibration size must be at least 1 image")

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["float_modules"] = list(self.float_modules)
        if self.qat is None:  # recipes without QAT keep the manifests (and their provenance) they always had
            del record["qat"]
        else:  # so do QAT recipes without a time budget, or with the task's loss
            if self.qat.minutes is None:
                del record["qat"]["minutes"]
            if self.qat.loss == "task":
                del record["qat"]["loss"]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "QuantRecipe":
        """The inverse of to_dict (a manifest's recipe); keys it lacks keep their defaults."""
        qat = record.get("qat")
        return cls(**{**record, "float_modules": tuple(record.get("float_modules", ())), "qat": QatRecipe(**qat) if qat else None})

    def keeping_in_float(self, *names: str) -> "QuantRecipe":
        return dataclasses.replace(self, float_modules=tuple(dict.fromkeys(self.float_modules + names)))
