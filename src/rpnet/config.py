"""Typed configuration: one frozen dataclass per stage, YAML in, overrides, YAML out.

A config file is a YAML mapping whose top-level keys are the fields of
:class:`Config`; each section (``data``, ``model``, ``train_cam`` ...) maps onto its
dataclass. Every key can be overridden on the command line with
``--set section.key=value``; the value is parsed as YAML (``true``, ``0.5``,
``[1.0, 0.5]``, ``null``). Unknown keys and values of the wrong type are rejected
with a :class:`~rpnet.errors.ConfigError` that names the key.

Stages receive only the sections they need, never the whole object through a
global.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml

from .errors import ConfigError

PROTOTYPE_LEVELS = ("block2", "block3", "block4")
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # a decimal number, exponent allowed
AUTO = "auto"
# A threshold on CAMs or scores: a number in (0, 1), or "auto", chosen from the data without ground
# truth by the stage that first needs it and written to its calibration.json (rpnet.calibration).
Threshold = Union[float, Literal["auto"]]


@dataclass(frozen=True)
class Range:
    """The interval a numeric key must lie in, checked when a config is read:
    ``epochs: Annotated[int, Range(ge=1)]``. Any bound may be left out."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def check(self, value: float, key: str) -> None:
        bounds = [(sign, bound, ok) for sign, bound, ok in (
            (">", self.gt, float.__gt__), (">=", self.ge, float.__ge__),
            ("<", self.lt, float.__lt__), ("<=", self.le, float.__le__)) if bound is not None]
        if not all(ok(float(value), float(bound)) for _, bound, ok in bounds):
            allowed = " and ".join(f"{sign} {bound:g}" for sign, bound, _ in bounds)
            raise ConfigError(f"config key {key!r} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class NonEmpty:
    """A list key that must hold at least one value."""

    def check(self, value: tuple, key: str) -> None:
        if not value:
            raise ConfigError(f"config key {key!r} must not be empty")


@dataclass(frozen=True)
class Ascending:
    """A list key whose values must not decrease (a (low, high) range)."""

    def check(self, value: tuple, key: str) -> None:
        if any(b < a for a, b in zip(value, value[1:])):
            raise ConfigError(f"config key {key!r} must be in increasing order, got {list(value)}")


Count = Annotated[int, Range(ge=0)]  # 0 allowed: pictures, workers
PositiveInt = Annotated[int, Range(ge=1)]  # epochs, batch sizes, crop sizes, steps
PositiveFloat = Annotated[float, Range(gt=0)]  # learning rates, multipliers, sigmas, scales
NonNegativeFloat = Annotated[float, Range(ge=0)]  # weight decay, powers, loss weights
Momentum = Annotated[float, Range(ge=0, lt=1)]  # SGD momentum: 1 and above never forgets a gradient (diverges)
Scales = Annotated[tuple[PositiveFloat, ...], NonEmpty()]  # inference scales
ScaleRange = Annotated[tuple[PositiveFloat, PositiveFloat], Ascending()]  # (low, high) jitter
SizeRange = Annotated[tuple[PositiveInt, PositiveInt], Ascending()]  # (low, high) resize


def check_threshold(value: Threshold, key: str) -> None:
    """A ConfigError unless ``value`` is "auto" or a number in (0, 1)."""
    if value != AUTO and not 0.0 < value < 1.0:
        raise ConfigError(f"{key} must be 'auto' or a number in (0, 1), got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the images, tags and masks are (see ``rpnet.data``)."""

    format: Literal["voc", "coco", "folder"] = "voc"
    root: Path | None = None
    classes: Path | None = None  # class-list file: background first, one name per line
    train_split: str = "train"
    eval_split: str = "val"
    fraction: float = 1.0  # keep this fraction of each class's training images (Table II)
    sbd_root: Path | None = None  # SBD folder; with train_split "train_aug" (VOC only)
    # A handful of training images with masks the user declares as input (docs/calibration.md, "With a few
    # masks"): every `auto` value is then chosen where these masks say, and they are never scored. VOC:
    # ImageSets/Segmentation/NAME.txt; folder and COCO: NAME.txt in data.root (image ids = file stems).
    calibration_split: str | None = None
    # Folder layout without split files for train_split and eval_split: eval_split is this seeded,
    # class-stratified fraction of the images that have masks (of all tagged images when none has),
    # train_split the rest (rpnet.data.build.validation_ids). 0: both are every image, as without it.
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.0
    num_workers: Count = 0  # DataLoader worker processes

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"data.fraction must be in (0, 1], got {self.fraction}")


@dataclass(frozen=True)
class ModelConfig:
    """The classifier of docs/method.md stage 1. ``prototypes: false`` is the plain-CAM baseline."""

    backbone: str = "resnet50"
    pretrained: Path | None = None
    prototypes: bool = True
    output_stride: Literal[8, 16, 32] = 16
    # How block4 (and block3 at output stride 8) keeps the output stride: "dilated" 3x3 convs (torchvision's
    # replace_stride_with_dilation, DeepLab's), or "undilated" (stride 1, dilation 1: IRN's and the released
    # RPNet code's networks, docs/method.md). The classifier and IRN; DeepLab is always dilated.
    block4: Literal["dilated", "undilated"] = "dilated"
    prototype_levels: tuple[str, ...] = ("block2", "block4")  # Table IV
    group_size: int = 2  # K images per group sharing a class (Table VII)
    alpha: Annotated[float, Range(ge=0, le=1)] = 0.3  # eq. 6 confidence threshold, a fraction of the peak activation
    activation_norm: Literal["channel", "global"] = "channel"  # eq. 3: per-channel max (docs/method.md) or the map's
    beta: float = 0.5  # eq. 6 Bernoulli keep probability (Table V)
    sigma: PositiveFloat = 3.0  # eq. 9 Gaussian sigma in block4 cells
    gaussian: bool = True  # Table VI: the filter on or off
    embed_dim: PositiveInt = 256  # eq. 3 embedding channels D
    lambda_s: NonNegativeFloat = 10.0  # eq. 11
    ls_mode: Literal["cam", "feature"] = "cam"  # eq. 13 on CAMs (default) or on features
    ls_detach_enhanced: bool = False  # stop the gradient through the enhanced branch in L_s
    cam_source: Literal["original", "enhanced"] = "original"  # which branch make-cam uses
    # IRN: no gradient into block1-2 of the CAM branch. None: detached when pretrained weights are loaded;
    # from scratch, a detached block1-2 would stay random (it gets no gradient from anywhere else).
    detach_block2: bool | None = None
    freeze_bn: bool | None = None  # None: frozen (running statistics) when pretrained weights are loaded
    freeze_stem: bool | None = None  # conv1/bn1 frozen; None: when pretrained (a random stem is not worth keeping)
    # Which reading of the method: the paper's text or the authors' released code (docs/method.md, "The
    # released code's reading"). Each key below left null takes the variant's value (VARIANT_DEFAULTS, read
    # with resolve()); a value given explicitly wins, so the two readings can be mixed key by key.
    variant: Literal["paper", "released"] = "paper"
    compare: Literal["last_level", "same_level"] | None = None  # eq. 7: prototypes vs O_N or vs their own level
    lc_on_original: bool | None = None  # eq. 12's L_c on the original branch
    lc_on_enhanced: bool | None = None  # eq. 12's L_c on the enhanced branch
    # eq. 13's enhanced side: relu CAMs of f'_N averaged over these input scales (1.0 keeps its gradient)
    ls_target_scales: Annotated[tuple[PositiveFloat, ...], NonEmpty()] | None = None
    foreground_gain: PositiveFloat | None = None  # eq. 9: F / max F is multiplied by this before the Gaussian
    prototype_masks: Literal["thinned", "full_and_thinned"] | None = None  # eq. 5-6: M * Z only, or M and M * Z
    prototype_source: Literal["embedding", "features"] | None = None  # eq. 3-6: O_n and O'_n, or the features
    gaussian_window: Literal["3sigma_replicate", "5x5_zeros"] | None = None  # eq. 9's filter support and border
    reduce_dim: Count | None = None  # a 1x1 conv (no ReLU) of block4 to this many channels first; 0: none
    non_local: bool | None = None  # a non-local block on each branch before the classifier
    role_heads: bool | None = None  # each position in a group has its own classifier (and non-local blocks)

    def resolve(self, key: str) -> Any:
        """The value of a key of :data:`VARIANT_DEFAULTS`: the one given, or the variant's when it is null."""
        value = getattr(self, key)
        return VARIANT_DEFAULTS[self.variant][key] if value is None else value

    def __post_init__(self) -> None:
        from .models.backbones import BACKBONES  # here, so that reading a config is checked before any work

        if self.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone {self.backbone!r} is unknown; choose from {sorted(BACKBONES)}")
        bad = [lv for lv in self.prototype_levels if lv not in PROTOTYPE_LEVELS]
        if bad or not self.prototype_levels:
            raise ConfigError(
                f"model.prototype_levels must be a non-empty subset of {list(PROTOTYPE_LEVELS)}, "
                f"got {list(self.prototype_levels)}"
            )
        if not 1 <= self.group_size <= 4:
            raise ConfigError(f"model.group_size must be 1..4, got {self.group_size}")
        if not 0.0 < self.beta <= 1.0:
            raise ConfigError(f"model.beta must be in (0, 1], got {self.beta}")
        if not (self.resolve("lc_on_original") or self.resolve("lc_on_enhanced")):
            raise ConfigError("model.lc_on_original and model.lc_on_enhanced are both false: L_c would train nothing")
        if 1.0 not in self.resolve("ls_target_scales"):
            raise ConfigError(f"model.ls_target_scales must hold 1.0 (the scale L_s trains through), "
                              f"got {list(self.resolve('ls_target_scales'))}")
        if (self.resolve("prototype_source") == "features" and self.resolve("compare") == "last_level"
                and self.prototype_levels != ("block4",)):
            raise ConfigError("model.prototype_source: features compares each level's prototypes with that level's "
                              "own features; set model.compare: same_level (or prototype_levels: [block4])")


# The values of ModelConfig's variant keys under each reading (docs/method.md, "The released code's
# reading"): "paper" is the paper's text, "released" the authors' released training code.
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {
        "compare": "last_level", "lc_on_original": False, "lc_on_enhanced": True, "ls_target_scales": (1.0,),
        "foreground_gain": 1.0, "prototype_masks": "thinned", "prototype_source": "embedding",
        "gaussian_window": "3sigma_replicate", "reduce_dim": 0, "non_local": False, "role_heads": False,
    },
    "released": {
        "compare": "same_level", "lc_on_original": True, "lc_on_enhanced": False,
        "ls_target_scales": (1.0, 0.5, 1.5, 2.0), "foreground_gain": 1.3, "prototype_masks": "full_and_thinned",
        "prototype_source": "features", "gaussian_window": "5x5_zeros", "reduce_dim": 512, "non_local": True,
        "role_heads": True,
    },
}


@dataclass(frozen=True)
class TrainCamConfig:
    """Stage 1 schedule (docs/method.md: 5 epochs, SGD lr 0.02 poly 0.9, batch 16, wd 1e-4).

    ``epochs``, ``lr`` and ``momentum`` left null take the schedule of :data:`CAM_SCHEDULES` that fits
    the backbone's start, ``model.pretrained`` set or null (filled in by :class:`Config`)."""

    epochs: PositiveInt | None = None
    batch_size: PositiveInt = 16
    lr: PositiveFloat | None = None
    weight_decay: NonNegativeFloat = 1e-4
    momentum: Momentum | None = None
    poly_power: NonNegativeFloat = 0.9
    new_layer_lr_mult: PositiveFloat = 10.0
    crop_size: PositiveInt = 512
    resize_long: SizeRange = (320, 640)
    amp: bool = True  # mixed precision, CUDA only
    log_every: PositiveInt = 10
    max_steps: PositiveInt | None = None  # stop early (smoke tests, benchmarks)


# Stage 1's schedule by the backbone's start. Pretrained: docs/method.md's, with IRN's momentum (its code
# passes weight decay into SGD's momentum slot; 1e-4 matches published numbers). From scratch: the lr and
# momentum configs/synthetic.yaml measured (lr 0.01 the best of 0.01-0.1, with momentum 0.9; IRN's 1e-4
# leaves a random backbone barely moving) and three times the epochs, as a random backbone needs more steps.
CAM_SCHEDULES: dict[str, dict[str, Any]] = {
    "pretrained": {"epochs": 5, "lr": 0.02, "momentum": 1e-4},
    "scratch": {"epochs": 15, "lr": 0.01, "momentum": 0.9},
}


def cam_schedule_name(model: "ModelConfig") -> str:
    """Which of :data:`CAM_SCHEDULES` fits ``model``: ``pretrained`` when ``model.pretrained`` is set."""
    return "pretrained" if model.pretrained is not None else "scratch"


@dataclass(frozen=True)
class MakeCamConfig:
    """Stage 2: multi-scale, flipped CAM inference."""

    scales: Scales = (1.0, 0.5, 1.5, 2.0)  # IRN's default
    flip: bool = True
    split: str | None = None  # None: data.train_split
    batch_size: PositiveInt = 8  # images per batch (fixed runs of images; those of one size inferred together)


@dataclass(frozen=True)
class EvalCamConfig:
    """Stage 3: background-threshold sweep and mIoU."""

    # Background score of the CAM label map that cam_miou scores; auto: calibrated from the CAMs
    # (eval_cam/calibration.json, docs/calibration.md). The paper and IRN score VOC at 0.15-0.16.
    threshold: Threshold = AUTO
    sweep: tuple[float, float, float] = (0.05, 0.95, 0.05)  # start, stop (inclusive), step: cam_miou_best
    split: str | None = None  # None: data.train_split (CAMs are scored on the train set)
    num_pictures: Count = 8

    def __post_init__(self) -> None:
        check_threshold(self.threshold, "eval_cam.threshold")
        start, stop, step = self.sweep
        if not (0.0 < start <= stop < 1.0 and step > 0.0):
            raise ConfigError(f"eval_cam.sweep is [start, stop, step] with 0 < start <= stop < 1 and step > 0, "
                              f"got {list(self.sweep)}")


@dataclass(frozen=True)
class IrLabelConfig:
    """Stage 4: confident foreground / background / ignore labels from CAMs, CRF-smoothed."""

    # Background scores of the confident-foreground and confident-background maps; auto: the
    # calibrated CAM threshold t and t / 2 (make_ir_label/calibration.json). IRN's VOC values are 0.30 / 0.05.
    fg_threshold: Threshold = AUTO
    bg_threshold: Threshold = AUTO
    workers: Count = 2  # parallel worker processes (the dense CRF runs on the CPU); 0 or 1: in this process
    split: str | None = None  # None: data.train_split

    def __post_init__(self) -> None:
        check_threshold(self.fg_threshold, "ir_label.fg_threshold")
        check_threshold(self.bg_threshold, "ir_label.bg_threshold")
        if AUTO not in (self.fg_threshold, self.bg_threshold) and self.fg_threshold < self.bg_threshold:
            raise ConfigError(f"ir_label.fg_threshold ({self.fg_threshold}) must not be below "
                              f"ir_label.bg_threshold ({self.bg_threshold})")


@dataclass(frozen=True)
class TrainIrnConfig:
    """Stage 5: the inter-pixel relation network (docs/method.md: 3 epochs, batch 32, lr 0.1, crop 512)."""

    # auto: ImageNet if given, else stage 1's; scratch: random weights (with train_backbone: true)
    backbone_init: Literal["auto", "pretrained", "classifier", "scratch"] = "auto"
    # Initial boundary probability of the boundary branch (its output bias is logit(p)); null:
    # PyTorch's default init (IRN's), which starts every pixel near 0.5.
    boundary_prior: float | None = None
    # Weight of the foreground positive pairs in IRN's boundary loss (rpnet.losses.irn_loss); 1 is IRN's.
    fg_pos_weight: float = 1.0
    epochs: PositiveInt = 3
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 0.1
    weight_decay: NonNegativeFloat = 1e-4
    momentum: Momentum = 1e-4  # IRN's optimizer quirk, as for the classifier
    poly_power: NonNegativeFloat = 0.9
    crop_size: PositiveInt = 512
    scale_range: ScaleRange = (0.5, 1.5)
    path_radius: Annotated[int, Range(ge=2)] = 10
    # IRN freezes the backbone (ImageNet features already hold edges); true also trains it (at lr x1,
    # stem and batch-norm statistics still frozen), for a backbone trained from scratch on few images.
    train_backbone: bool = False
    amp: bool = True
    log_every: PositiveInt = 10
    max_steps: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.boundary_prior is not None and not 0 < self.boundary_prior < 1:
            raise ConfigError(f"train_irn.boundary_prior must be in (0, 1) or null, got {self.boundary_prior}")
        if not self.fg_pos_weight > 0:
            raise ConfigError(f"train_irn.fg_pos_weight must be positive, got {self.fg_pos_weight}")
        from .ops.random_walk import WALK_STRIDE

        # The affinity pairs span 2 (radius - 1) cells of the crop's 1/stride label map (rpnet.ops.affinity).
        cells, span = -(-self.crop_size // WALK_STRIDE), 2 * (self.path_radius - 1)
        if cells <= span:
            raise ConfigError(f"train_irn.crop_size {self.crop_size} is too small for train_irn.path_radius "
                              f"{self.path_radius}: its {cells}-cell label map (stride {WALK_STRIDE}) must be wider "
                              f"than {span} cells, so crop_size > {span * WALK_STRIDE}")


@dataclass(frozen=True)
class PseudoConfig:
    """Stage 6: boundary map -> transition matrix -> random walk -> pseudo masks."""

    beta: PositiveFloat = 10.0
    radius: PositiveInt = 5
    steps: PositiveInt = 256  # 2^8
    # Background score against the walked CAMs; auto: from the walked scores (make_pseudo/calibration.json).
    # IRN's VOC value is 0.25.
    bg_threshold: Threshold = AUTO
    # Which labels make-pseudo writes: the walk's, the CAM's (at eval-cam's threshold), or auto: with a
    # calibration split the one that scores better on its masks, without one the walk's.
    source: Literal["auto", "walk", "cam"] = "auto"
    split: str | None = None  # None: data.train_split

    def __post_init__(self) -> None:
        check_threshold(self.bg_threshold, "pseudo.bg_threshold")


@dataclass(frozen=True)
class EvalPseudoConfig:
    """Stage 7: pseudo-mask mIoU against the ground truth."""

    split: str | None = None  # None: data.train_split
    num_pictures: Count = 8


@dataclass(frozen=True)
class TrainSegConfig:
    """Stage 8: DeepLab on the pseudo masks (docs/method.md: DeepLab-LargeFOV, ResNet-50, poly lr, crop ~321-512,
    flips and scale jitter). The numbers not in docs/method.md are DeepLab v2's VOC recipe: SGD lr 1e-3 with 10x on
    the head, momentum 0.9, weight decay 5e-4, batch 10, crop 321, about 20k steps (20 epochs of train_aug)."""

    labels: Literal["pseudo", "gt"] = "pseudo"  # gt: the ground-truth masks, the upper bound of the method
    # Images of the split without tags: "background" trains on them as all-background examples (their
    # pseudo masks are background: no tag, no CAM); "drop" leaves them out, as the classifier does.
    untagged: Literal["background", "drop"] = "background"
    # The images of data.calibration_split train on their true masks in place of their pseudo masks.
    calibration_masks: bool = True
    # Score the model on data.eval_split (one scale, its images with masks) every this many epochs: val_miou
    # in log.jsonl and the report, the best epoch's weights kept as best.safetensors. 0: never; no masks: never.
    val_every: Count = 1
    # Which epoch's weights model.safetensors (what predict and eval-seg use) holds: "best", the best val_miou's
    # where there was validation (the last epoch's also kept, as last.safetensors); "last", the last epoch's
    # (the paper's protocol: choosing the epoch on data.eval_split makes seg_miou, scored there, optimistic).
    keep: Literal["best", "last"] = "best"
    architecture: Literal["deeplab_largefov", "deeplabv3plus"] = "deeplab_largefov"
    backbone: str | None = None  # None: model.backbone
    output_stride: Literal[8, 16] = 8
    # auto: ImageNet (model.pretrained) if given, else stage 1's backbone if trained, else from scratch
    backbone_init: Literal["auto", "pretrained", "classifier", "scratch"] = "auto"
    freeze_bn: bool | None = None  # None: frozen (running statistics) when ImageNet weights are loaded
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 10
    lr: PositiveFloat = 1e-3
    head_lr_mult: PositiveFloat = 10.0
    momentum: Momentum = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    poly_power: NonNegativeFloat = 0.9
    crop_size: PositiveInt = 321
    scale_range: ScaleRange = (0.5, 1.5)
    split: str | None = None  # None: data.train_split
    amp: bool = True
    log_every: PositiveInt = 10
    max_steps: PositiveInt | None = None

    def __post_init__(self) -> None:
        from .models.backbones import BACKBONES

        if self.backbone is not None and self.backbone not in BACKBONES:
            raise ConfigError(f"train_seg.backbone {self.backbone!r} is unknown; choose from {sorted(BACKBONES)}")


@dataclass(frozen=True)
class EvalSegConfig:
    """Stage 9: multi-scale + flip inference on ``data.eval_split``, with and without a dense CRF (Table VIII)."""

    scales: Scales = (0.5, 0.75, 1.0, 1.25, 1.5)
    flip: bool = True
    crf: bool = True  # also score (and write) the CRF-refined masks
    split: str | None = None  # None: data.eval_split
    num_pictures: Count = 8


@dataclass(frozen=True)
class EngineConfig:
    """How the stages run, not what they compute: ranks under torchrun, batch norm across them, GPU layout.

    Training batch sizes in the stage sections are global: under torchrun each of the R ranks
    takes batch_size / R images per step; learning rates are used as configured, never scaled.
    """

    backend: Literal["auto", "gloo", "nccl"] = "auto"  # torch.distributed backend; auto: nccl on CUDA, else gloo
    sync_bn: bool = False  # trainable batch norm over every rank's images (CUDA only); false: each rank's own
    channels_last: bool = True  # NHWC tensors and weights on CUDA (tensor-core convolutions); ignored on CPU
    inference_amp: bool = True  # bfloat16 autocast (float16 without bf16) for CAM inference on CUDA
    trace_ranks: bool = False  # debug: each rank logs its images and a weights digest per step (train_*/trace/)
    tensorboard: bool = False  # training logs also as TensorBoard scalars (train_*/tensorboard/; pip install tensorboard)


@dataclass(frozen=True)
class Config:
    """The whole experiment: one work dir, one seed, one section per stage."""

    work_dir: Path = Path("work_dirs/default")
    seed: Count = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train_cam: TrainCamConfig = field(default_factory=TrainCamConfig)
    make_cam: MakeCamConfig = field(default_factory=MakeCamConfig)
    eval_cam: EvalCamConfig = field(default_factory=EvalCamConfig)
    ir_label: IrLabelConfig = field(default_factory=IrLabelConfig)
    train_irn: TrainIrnConfig = field(default_factory=TrainIrnConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    eval_pseudo: EvalPseudoConfig = field(default_factory=EvalPseudoConfig)
    train_seg: TrainSegConfig = field(default_factory=TrainSegConfig)
    eval_seg: EvalSegConfig = field(default_factory=EvalSegConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        schedule = CAM_SCHEDULES[cam_schedule_name(self.model)]  # stage 1's keys left null
        unset = {key: value for key, value in schedule.items() if getattr(self.train_cam, key) is None}
        if unset:
            object.__setattr__(self, "train_cam", dataclasses.replace(self.train_cam, **unset))
        # Stage 1 batches are groups of model.group_size images sharing a class (rpnet.data.sampling).
        if self.train_cam.batch_size % self.model.group_size:
            raise ConfigError(f"train_cam.batch_size {self.train_cam.batch_size} must be a multiple of "
                              f"model.group_size {self.model.group_size} (each batch is made of whole groups)")


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | Path, kind: str = "config") -> Any:
    """The parsed contents of a YAML file; a ConfigError when it is missing (``kind`` names it) or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        return yaml.load(path.read_text(encoding="utf-8-sig"), Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a {kind} is YAML text in UTF-8)") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``KEY=VALUE`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        raw = loaded
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    return from_dict(Config, raw)


def parse_override(item: str) -> tuple[str, Any]:
    """``"model.beta=0.7"`` -> ``("model.beta", 0.7)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like KEY=VALUE (e.g. model.backbone=resnet101)")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(raw) - known)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"unknown config key {key!r}; {where} has: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " or ".join(repr(c) for c in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert where lossless (int -> float, str -> Path)."""
    origin = get_origin(tp)
    if origin is Annotated:  # a type with checks on its value (Range, NonEmpty, Ascending)
        base, *checks = get_args(tp)
        value = _coerce(value, base, key)
        for check in checks:
            check.check(value, key)
        return value
    if is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, prefix=f"{key}.")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"config key {key!r} may not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"config key {key!r}: {value!r} is none of {', '.join(_type_name(a) for a in args)}"
        )
    if origin is Literal:
        choices = get_args(tp)
        bool_mismatch = isinstance(value, bool) and not any(isinstance(c, bool) for c in choices)
        if bool_mismatch or value not in choices:
            raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config key {key!r} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if value is None:
        raise ConfigError(f"config key {key!r} may not be null")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as text
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
    else:  # pragma: no cover - a field type this module does not know is a bug here
        raise TypeError(f"config key {key!r} has unsupported type {tp!r}")
    raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {value!r}")


# --------------------------------------------------------------------------- saving


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-safe values (Paths as strings, tuples as lists)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (what ``save_config`` writes)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config atomically; stages call this beside their outputs."""
    from .io import atomic_write_text

    return atomic_write_text(Path(path), dump_config(cfg))


def with_overrides(cfg: Config, **sections: Any) -> Config:
    """``with_overrides(cfg, model={"prototypes": False})``: a checked copy with some keys changed."""
    raw = to_dict(cfg)
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(to_dict(values))
        else:
            raw[section] = to_dict(values)
    return from_dict(Config, raw)


__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainCamConfig",
    "MakeCamConfig",
    "EvalCamConfig",
    "IrLabelConfig",
    "TrainIrnConfig",
    "PseudoConfig",
    "EvalPseudoConfig",
    "TrainSegConfig",
    "EvalSegConfig",
    "EngineConfig",
    "PROTOTYPE_LEVELS",
    "VARIANT_DEFAULTS",
    "CAM_SCHEDULES",
    "AUTO",
    "Threshold",
    "load_config",
    "parse_override",
    "from_dict",
    "to_dict",
    "dump_config",
    "save_config",
    "with_overrides",
]
