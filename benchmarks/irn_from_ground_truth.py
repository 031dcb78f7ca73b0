"""Stage 5 trained on confident labels drawn from the ground truth (issue: boundary refinement).

    python benchmarks/irn_from_ground_truth.py CONFIG --out DIR [--margin PX] [--set KEY=VALUE ...]

IRN learns its boundaries from make-ir-label's confident labels. This benchmark replaces them by
perfect ones and asks what IRN then gives the same CAMs: if the pseudo labels stay near the CAMs
even so, the boundary network's training (steps, features), not the seeds, is what holds them back.

It copies the CAMs (make-cam) and ``metrics.json`` of CONFIG's work dir into DIR, writes one
label map per training image in make-ir-label's place -- foreground: each object shrunk by
``--margin`` px, background: the pixels farther than ``--margin`` px from every object, the rest
ignore (an unknown band centred on the true outline, as IRN's lies between its two CAM
thresholds) -- then runs train-irn, make-pseudo and eval-pseudo in DIR with CONFIG's settings
and the ``--set`` overrides, and prints the pseudo mIoU next to the CAMs'. ``rpnet demo`` leaves
two work dirs to start from, e.g. CONFIG = ``demo_out/baseline/config.yaml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from refinement_bounds import near  # this folder is on sys.path when the script runs
from stage_runs import run_stages, start_from_cams

from rpnet.config import load_config
from rpnet.io import IGNORE_INDEX, read_json, save_mask
from rpnet.stages.common import scored_dataset
from rpnet.layout import WorkDir


def ground_truth_seeds(mask: np.ndarray, margin: int) -> np.ndarray:
    """(H, W) ground-truth labels (0 background, IGNORE_INDEX borders) -> confident labels.

    Class c where the pixel and every pixel within ``margin`` px are c; 0 where no object pixel
    is within ``margin`` px; IGNORE_INDEX elsewhere (and on the mask's own ignore pixels).
    """
    out = np.full(mask.shape, IGNORE_INDEX, dtype=np.uint8)
    objects = (mask != 0) & (mask != IGNORE_INDEX)
    out[~near(objects, margin)] = 0
    for c in np.unique(mask[objects]):
        out[~near(mask != c, margin)] = c  # shrunk: no other label within margin px
    out[mask == IGNORE_INDEX] = IGNORE_INDEX
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="config of a work dir that has run make-cam")
    parser.add_argument("--out", type=Path, required=True, help="work dir of this benchmark (replaced)")
    parser.add_argument("--margin", type=int, default=4, help="half width of the unknown band, px (default 4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    source = load_config(args.config, args.overrides)
    cfg = load_config(args.config, [*args.overrides, f"work_dir={args.out}"])
    start_from_cams(source, cfg)

    dataset = scored_dataset(cfg, cfg.data.train_split, "ground-truth confident labels")
    labels = WorkDir(cfg.work_dir).ir_labels
    labels.mkdir(parents=True)
    for i, record in enumerate(dataset.records):
        save_mask(labels / f"{record.id}.png", ground_truth_seeds(dataset[i]["mask"], args.margin))

    times = run_stages(cfg, ["train-irn", "make-pseudo", "eval-pseudo"])
    result = read_json(WorkDir(cfg.work_dir).metrics)
    cam = f"{result['cam_miou']:.2f} at its best threshold {result['cam_threshold']:g}" if "cam_miou" in result else "?"
    print(f"{cfg.work_dir}: IRN from ground-truth confident labels (unknown band +-{args.margin} px), "
          f"{cfg.train_irn.epochs} epochs, path radius {cfg.train_irn.path_radius}, seed {cfg.seed}")
    print(f"  CAM mIoU {cam}; pseudo mIoU {result['pseudo_miou']:.2f}")
    print("  " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


if __name__ == "__main__":
    main()
