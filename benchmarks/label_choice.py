"""Which labels should ten masks pick? make-pseudo's choice rule against two cautious ones, over many draws.

make-pseudo, given a calibration split, scores every candidate label source (the walk at each background
score, the CAMs at each threshold) on the calibration images and keeps the best (``argmax``). On few
images that maximum is noisy: on distinct-bodies (benchmarks/few_masks.py) it picked walk background
scores 0.1-0.2 away from the best one for the other images and lost 3-4 points to the label-free rule.
This compares, on the labels of ``benchmarks/few_masks.py``'s k = 0 runs (their walks and CAMs, scored
against every training image's mask once), over ``--draws`` random draws of k images:

- ``label-free``: no masks: the walk at the k = 0 run's calibrated background score (the prior);
- ``argmax``: make-pseudo's rule, the best candidate on the k images;
- ``1-SE``: the label-free choice unless the best candidate beats it on the k images by more than one
  jackknife standard error of the paired difference (leave one image out, both candidates rescored);
- ``2-SE``: the same at two standard errors.

Printed per design and model: the mean mIoU of the chosen labels on the other images, and how often
(of the draws) it is below max(best walk, best CAM on those images) - 1.5, few_masks.py's bar.

    python benchmarks/label_choice.py --out /work/fm                 # few_masks.py's --out
    python benchmarks/label_choice.py --out /work/fm --profiles default --draws 200

No training; a minute or two per design and model on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rpnet.calibration import MASK_CANDIDATES, label_evidence
from rpnet.data.build import build_dataset
from rpnet.data.synthetic import SUITE_PROFILES
from rpnet.demo import MODELS
from rpnet.io import read_json
from rpnet.layout import WorkDir
from rpnet.ops.calibration import miou_of
from rpnet.stages.make_pseudo import load_scores

from few_masks import config  # noqa: E402  (a sibling script: run from benchmarks/ or the repository root)
from mask_estimates import all_evidence  # noqa: E402

BAR = 1.5  # few_masks.py's: within this of the better oracle
RULES = ("label-free", "argmax", "1-SE", "2-SE")


def walk_evidence(data: Path, work: Path, model: str, thresholds: np.ndarray) -> np.ndarray:
    """(T, N, L, L): the walk's labels of every training image at each background score of ``thresholds``."""
    cfg = config(data, work, model, [])
    images = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    walks = WorkDir(work).walks

    def triples():
        for i, record in enumerate(images.records):
            keys, scores = load_scores(walks / f"{record.id}.npz")
            yield scores.numpy(), keys, images[i]["mask"]

    return label_evidence(triples(), thresholds, images.num_classes + 1)


def paired_se(picked: np.ndarray, a: int, b: int) -> float:
    """The jackknife standard error of (pooled mIoU of candidate a) - (that of b) on the images ``picked``
    (M, k, L, L): each image left out in turn, both rescored on the rest."""
    k = picked.shape[1]
    pooled = picked[[a, b]].sum(axis=1)  # (2, L, L)
    loo = miou_of(pooled[:, None] - picked[[a, b]])  # (2, k)
    diff = loo[0] - loo[1]
    return float(np.sqrt((k - 1) / k * np.sum((diff - diff.mean()) ** 2)))


def choose(picked: np.ndarray, prior: int, rule: str) -> int:
    """The candidate ``rule`` keeps given the evidence of the picked images (M, k, L, L)."""
    if rule == "label-free":
        return prior
    scores = miou_of(picked.sum(axis=1))
    best = int(np.argmax(scores))
    if rule == "argmax" or best == prior:
        return best
    margin = {"1-SE": 1.0, "2-SE": 2.0}[rule] * paired_se(picked, best, prior)
    return best if scores[best] - scores[prior] > margin else prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="few_masks.py's --out")
    parser.add_argument("--profiles", nargs="+", default=list(SUITE_PROFILES), choices=list(SUITE_PROFILES))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--draws", type=int, default=60)
    args = parser.parse_args()
    print(f"k = {args.k}, {args.draws} draws; mIoU of the chosen labels on the other images (mean), and the draws "
          f"below max(oracles) - {BAR}")
    print(f"{'design':16s} {'model':8s} {'oracle':>6s}  " + "  ".join(f"{r:>16s}" for r in RULES))
    for profile in args.profiles:
        for model in args.models:
            work = args.out / profile / model / "k0"
            if not WorkDir(work).walks.is_dir():
                continue
            data = args.out / "data" / profile
            free = read_json(WorkDir(work).calibration("make-pseudo"))["values"]["bg_threshold"]
            thresholds = MASK_CANDIDATES  # the grid, and the label-free score in it
            if not np.isclose(thresholds, free, atol=1e-6).any():
                thresholds = np.sort(np.append(thresholds, np.float32(free)))
            prior = int(np.flatnonzero(np.isclose(thresholds, free, atol=1e-6))[0])  # the walk at the label-free score
            walk = walk_evidence(data, work, model, thresholds)
            evidence = np.concatenate([walk, all_evidence(data, work, model)])  # the walk's, then the CAM's
            count, found = evidence.shape[1], {rule: [] for rule in RULES}
            oracles = []
            for draw in range(args.draws):
                picked = np.random.default_rng([args.k, draw, 77]).choice(count, args.k, replace=False)
                rest = np.setdiff1d(np.arange(count), picked)
                truth = miou_of(evidence[:, rest].sum(axis=1)) * 100
                oracles.append(truth.max())
                for rule in RULES:
                    found[rule].append(truth[choose(evidence[:, picked], prior, rule)])
            bar = np.array(oracles) - BAR
            cells = [f"{np.mean(v):5.1f} ({int(np.sum(np.array(v) < bar)):2d}/{args.draws})" for v in found.values()]
            print(f"{profile:16s} {model:8s} {np.mean(oracles):6.1f}  " + "  ".join(f"{c:>16s}" for c in cells),
                  flush=True)


if __name__ == "__main__":
    main()
