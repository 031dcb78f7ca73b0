"""Stage 6's random walk on the pipeline's boundary map vs on the ground truth's (issue: boundary refinement).

    python benchmarks/refinement_bounds.py CONFIG [--set KEY=VALUE ...]

Reads a work dir that has run make-cam, make-ir-label and make-pseudo (``rpnet demo`` leaves two:
``demo_out/baseline`` and ``demo_out/rpnet``, each with its ``config.yaml`` in a stage folder) and
the ground-truth masks of the training split, and prints the mIoU over the split of:

- ``CAM``: the stride-4 CAMs that the walk starts from, upsampled, no walk, background score
  ``pseudo.bg_threshold`` (eval-cam's figure, at its best threshold, is printed beside it);
- ``walk, IRN boundaries``: the pseudo labels make-pseudo wrote (recomputed from its saved boundary maps);
- ``walk, ground-truth boundaries``: the same walk (``pseudo.*``) on a boundary map drawn from the
  ground truth: a stride-4 cell is boundary where its 4x4 pixels hold a change of label or the
  ignore band. The most any boundary network could give these CAMs: if it is not above the CAMs,
  the CAMs (not IRN) keep the pseudo labels below them;
- ``walk, no boundaries``: the walk with an all-zero boundary map (it only blurs the CAMs).

It also scores the confident labels of make-ir-label, IRN's training signal: the share of the
foreground seed pixels that lie on their class (split into those on background within 8 px of
an object, the spill of a CAM blob, and farther away, e.g. a co-occurring background), and of
the background seed pixels that lie on background.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rpnet.config import load_config
from rpnet.io import IGNORE_INDEX, load_mask, read_json
from rpnet.layout import WorkDir, load_boundary, load_cams
from rpnet.metrics import ConfusionMatrix
from rpnet.ops.random_walk import WALK_STRIDE, pseudo_label_from_walk
from rpnet.stages.common import scored_dataset

SPILL_PX = 8  # a wrong foreground seed this close to an object counts as a CAM blob's spill


def ground_truth_boundary(mask: np.ndarray, stride: int = WALK_STRIDE) -> Tensor:
    """(H, W) label mask with IGNORE_INDEX bands -> (ceil(H/s), ceil(W/s)) float map, 1 on boundary cells.

    A pixel is on a boundary when its 3x3 neighbourhood holds two labels or it is in the ignore
    band; a cell of the stride-s map is boundary when any of its s x s pixels is.
    """
    m = torch.from_numpy(np.where(mask == IGNORE_INDEX, -1, mask).astype(np.float32))[None, None]
    high = F.max_pool2d(m, 3, 1, 1)
    low = -F.max_pool2d(-m, 3, 1, 1)
    edge = ((high != low) | (m < 0)).float()
    return F.max_pool2d(edge, stride, stride, ceil_mode=True)[0, 0]


def near(mask: np.ndarray, distance: int) -> np.ndarray:
    """(H, W) bool: within ``distance`` pixels (chessboard) of a True pixel of ``mask``."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * distance + 1, 1, distance)[0, 0].numpy() > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(args.config, args.set)
    pc = cfg.pseudo
    dataset = scored_dataset(cfg, pc.split or cfg.data.train_split, "the refinement's bounds")
    matrices: dict[str, ConfusionMatrix] = {}
    seeds = dict(fg=0, fg_right=0, fg_spill=0, fg_far=0, bg=0, bg_right=0)
    work = WorkDir(cfg.work_dir)
    labels = work.ir_labels
    score_seeds = all((labels / f"{r.id}.png").exists() for r in dataset.records)
    for i, record in enumerate(dataset.records):
        gt = dataset[i]["mask"]
        cam = load_cams(work.cam(record.id))
        strided = torch.from_numpy(cam.cam.astype(np.float32))
        no_edge = torch.zeros(strided.shape[1:])
        walks = {  # name: (boundary map, walk steps)
            "CAM": (no_edge, 0),
            "walk, IRN boundaries": (torch.from_numpy(load_boundary(work.boundaries / f"{record.id}.png")),
                                     pc.steps),
            "walk, ground-truth boundaries": (ground_truth_boundary(gt), pc.steps),
            "walk, no boundaries": (no_edge, pc.steps),
        }
        for name, (edge, steps) in walks.items():
            pred = pseudo_label_from_walk(strided, cam.keys, edge, gt.shape, radius=pc.radius, beta=pc.beta,
                                          steps=steps, bg_threshold=pc.bg_threshold)
            matrices.setdefault(name, ConfusionMatrix(dataset.num_classes + 1)).update(gt, pred.numpy())
        if score_seeds:
            seed = load_mask(labels / f"{record.id}.png")
            scored = gt != IGNORE_INDEX
            fg = (seed != 0) & (seed != IGNORE_INDEX) & scored
            wrong_on_bg = fg & (gt == 0)
            close = near((gt != 0) & scored, SPILL_PX)
            seeds["fg"] += int(fg.sum())
            seeds["fg_right"] += int((fg & (seed == gt)).sum())
            seeds["fg_spill"] += int((wrong_on_bg & close).sum())
            seeds["fg_far"] += int((wrong_on_bg & ~close).sum())
            bg = (seed == 0) & scored
            seeds["bg"] += int(bg.sum())
            seeds["bg_right"] += int((bg & (gt == 0)).sum())
    metrics_path = work.metrics
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    print(f"{cfg.work_dir}: {len(dataset)} images, walk: {pc.steps} steps, beta {pc.beta:g}, radius {pc.radius}, "
          f"background score {pc.bg_threshold:g}")
    for name, matrix in matrices.items():
        extra = ""
        if name == "CAM" and "cam_miou" in metrics:
            extra = f"   (eval-cam: {metrics['cam_miou']:.2f} at its best threshold {metrics['cam_threshold']:g})"
        print(f"  {name:32s} {matrix.miou() * 100:6.2f}{extra}")
    if score_seeds and seeds["fg"] and seeds["bg"]:
        print(f"  confident labels: foreground {seeds['fg_right'] / seeds['fg']:.1%} on their class, "
              f"{seeds['fg_spill'] / seeds['fg']:.1%} on background within {SPILL_PX} px of an object, "
              f"{seeds['fg_far'] / seeds['fg']:.1%} farther; background {seeds['bg_right'] / seeds['bg']:.1%} right")


if __name__ == "__main__":
    main()
