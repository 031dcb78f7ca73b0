"""How good are a calibration split's choice and estimate? Many random draws, from CAMs alone.

For each design and model whose classifier ``benchmarks/few_masks.py`` trained (``OUT/<design>/<model>/base``),
every training image's CAM labels are scored once at every candidate threshold
(:data:`rpnet.calibration.MASK_CANDIDATES`). Then, for each k and each of ``--draws`` random draws of k
images (seeded by (k, draw, 99), other draws than few_masks.py's), the threshold is chosen on the k images
as eval-cam chooses it, and printed per (design, model, k):

- ``gap``: the mean (and 90th percentile) of how far the chosen threshold's CAM mIoU on the other images
  falls below the best threshold's there (the oracle);
- ``jackknife-t`` and ``bootstrap``: how often the 90 % interval of the estimate held the true CAM mIoU
  of the other images: rpnet's interval (:func:`rpnet.ops.calibration.jackknife_interval`), and the
  percentile bootstrap over the held-out images (2000 resamples) it replaced; their mean widths.

    python benchmarks/mask_estimates.py --out /tmp/fm                  # every base under --out
    python benchmarks/mask_estimates.py --out /tmp/fm --profiles default --draws 100

No training: about a minute per design and model on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rpnet.calibration import ESTIMATE_LEVEL, MASK_CANDIDATES, label_evidence
from rpnet.data.build import build_dataset
from rpnet.data.synthetic import SUITE_PROFILES
from rpnet.demo import MODELS
from rpnet.layout import WorkDir, load_cams
from rpnet.ops.calibration import choose_candidate, held_out_matrices, jackknife_interval, miou_of


from few_masks import config  # noqa: E402  (a sibling script: run from benchmarks/ or the repository root)


def all_evidence(data: Path, work: Path, model: str) -> np.ndarray:
    """(T, N, L, L): the CAM labels of every training image at every candidate threshold."""
    cfg = config(data, work, model, [])
    images = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    cams = WorkDir(work)

    def triples():
        for i, record in enumerate(images.records):
            cam = load_cams(cams.cam(record.id))
            yield cam.high_res, cam.keys, images[i]["mask"]

    return label_evidence(triples(), MASK_CANDIDATES, images.num_classes + 1)


def percentile_bootstrap(per_image: np.ndarray, level: float, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The middle ``level`` of the pooled mIoU of ``draws`` resamples of the images, with replacement."""
    picks = np.random.default_rng(seed).integers(0, len(per_image), size=(draws, len(per_image)))
    mious = miou_of(per_image[picks].sum(axis=1))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(mious, [tail, 100 - tail])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="few_masks.py's --out")
    parser.add_argument("--profiles", nargs="+", default=list(SUITE_PROFILES), choices=list(SUITE_PROFILES))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ks", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--draws", type=int, default=60)
    args = parser.parse_args()
    print(f"{'design':16s} {'model':8s} {'k':>3s}  gap mean / p90   jackknife-t in (width)   bootstrap in (width)")
    for profile in args.profiles:
        for model in args.models:
            work = args.out / profile / model / "base"
            if not WorkDir(work).cams.is_dir():
                continue
            evidence = all_evidence(args.out / "data" / profile, work, model)
            count = evidence.shape[1]
            for k in args.ks:
                gaps, held = [], {"jackknife-t": [], "bootstrap": []}
                for draw in range(args.draws):
                    picked = np.random.default_rng([k, draw, 99]).choice(count, k, replace=False)
                    rest = np.setdiff1d(np.arange(count), picked)
                    chosen = choose_candidate(evidence[:, picked])
                    truth = miou_of(evidence[:, rest].sum(axis=1))
                    gaps.append((truth.max() - truth[chosen]) * 100)
                    out = held_out_matrices(evidence[:, picked])
                    for name, (low, high) in (("jackknife-t", jackknife_interval(out, ESTIMATE_LEVEL)),
                                              ("bootstrap", percentile_bootstrap(out, ESTIMATE_LEVEL))):
                        held[name].append((low <= truth[chosen] <= high, (high - low) * 100))
                cells = [f"{sum(h for h, _ in v):3d}/{args.draws} ({np.mean([w for _, w in v]):4.1f})"
                         for v in held.values()]
                print(f"{profile:16s} {model:8s} {k:3d}  {np.mean(gaps):5.2f} / {np.percentile(gaps, 90):5.2f}     "
                      f"{cells[0]}          {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
