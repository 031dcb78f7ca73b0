"""``rpnet pretrain``: a backbone pretrained on generated data of other classes, for ``model.pretrained``.

The paper fine-tunes ImageNet features; a user without ImageNet weights (or with a backbone that has
none) can make a stand-in: generate a large synthetic dataset of the twelve classes of
:data:`rpnet.data.synthetic.PRETRAIN_CLASSES` (none of them the default dataset's), train the plain
multi-label classifier of stage 1 on it (train-cam with ``model.prototypes=false``, ``configs/synthetic.yaml``
otherwise), and write its backbone in the family's own key layout (torchvision's for ResNets), so that
``model.pretrained=OUT/backbone.safetensors`` loads it exactly as it loads ImageNet weights: batch norm
frozen at the pretraining statistics, stem frozen, block2 detached in the classifier, as for ImageNet.

    OUT/data/                   the generated dataset (``rpnet synth --profile pretrain``)
    OUT/work/                   the train-cam work dir (a killed run resumes from its checkpoint)
    OUT/backbone.safetensors    the backbone, classifier head removed

docs/backbones.md says when to use it; docs/experiments.md measures what it changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .config import load_config
from .data.synthetic import PROFILES, generate
from .demo import synthetic_config
from .errors import RpnetError
from .io import read_json
from .layout import WorkDir
from .models.build import CLASSIFIER_BACKBONE_PREFIX, classifier_backbone_state
from .models.weights import save_safetensors
from .pipeline.runner import run_pipeline

log = logging.getLogger(__name__)

PROFILE = "pretrain"  # the design of rpnet.data.synthetic.PROFILES the backbone learns from
BACKBONE_FILE = "backbone.safetensors"
PRETRAIN_SEED = 1  # the dataset's seed by default: not the demo's 0 (the classes differ anyway)
N_VAL = 20  # a small val split, so the folder is an ordinary dataset; pretraining never reads it


def backbone_state(classifier_weights: Path) -> dict:
    """:func:`~rpnet.models.build.classifier_backbone_state` of train-cam's weights; a file without a
    backbone is an error (there would be nothing to write)."""
    state = classifier_backbone_state(classifier_weights)
    if not state:
        raise RpnetError(f"{classifier_weights} holds no '{CLASSIFIER_BACKBONE_PREFIX}*' tensors")
    return state


def pretrain_backbone(out: Path, *, backbone: str = "resnet18", n_train: int = 3000, size: int = 128,
                      seed: int = PRETRAIN_SEED, overrides: Sequence[str] = ()) -> Path:
    """Generate the pretraining data (once), train the classifier on it, write ``OUT/backbone.safetensors``.

    ``overrides`` (``KEY=VALUE``) change the training config (``train_cam.epochs=...``); ``seed`` is the
    dataset's and the training's. A rerun reuses the dataset and a finished or half-finished training.
    Returns the path of the backbone file.
    """
    out = Path(out)
    data = out / "data"
    if not (data / "synth.json").exists():
        log.info("pretrain: generating %d images of the %r design into %s", n_train, PROFILE, data)
        generate(data, n_train=n_train, n_val=N_VAL, size=size, seed=seed, spec=PROFILES[PROFILE])
    elif read_json(data / "synth.json").get("n_train") != n_train:
        log.warning("pretrain: %s already holds a dataset of another size; using it as it is", data)
    cfg = load_config(synthetic_config(), [
        f"data.root={data}", f"work_dir={out / 'work'}", f"seed={seed}", f"model.backbone={backbone}",
        "model.prototypes=false", "model.pretrained=null", *overrides,
    ])
    run_pipeline(cfg, until="train-cam")
    target = out / BACKBONE_FILE
    save_safetensors(target, backbone_state(WorkDir(cfg.work_dir).weights("train-cam")),
                     metadata={"backbone": cfg.model.backbone, "source": "rpnet pretrain",
                               "profile": PROFILE, "n_train": str(n_train), "seed": str(seed)})
    print(f"backbone written to {target}: use it with --set model.pretrained={target}")
    return target
