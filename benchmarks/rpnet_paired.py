"""Baseline against each reading of RPNet, paired over seeds, at full data and at a fraction of it.

The demo's regime: ``configs/synthetic.yaml`` (ResNet-18 from scratch, 128 px), the demo's dataset
(``rpnet synth``, default design, 200 training images), train-cam, make-cam and eval-cam. For each data
fraction and seed, the baseline (``model.prototypes=false``) and each RPNet reading (``model.variant``
paper / released) train on the same images with the same schedule and seed; a pair is (reading, baseline)
with one seed. Printed per fraction: each model's CAM mIoU per seed (calibrated threshold and ground-truth
best), the mean paired difference to the baseline with its standard error (sd / sqrt(n)), and the mean
flaw metrics of the synthetic part maps (recall of the distinctive part and of the rest of the object;
foreground on co-occurring context and on other background).

    python benchmarks/rpnet_paired.py --out DIR                            # seeds 0-4, fractions 1 and 0.25
    python benchmarks/rpnet_paired.py --out DIR --seeds 0 1 --fractions 0.25 --models baseline paper
    python benchmarks/rpnet_paired.py --out DIR --set model.pretrained=PRE/backbone.safetensors  # rpnet pretrain
    python benchmarks/rpnet_paired.py --out DIR --until eval-pseudo      # also the pseudo labels (slower)

``--set KEY=VALUE`` changes the config of every model alike (the start of the backbone, the schedule);
``--until`` runs the pipeline further than eval-cam and adds the later scores (pseudo-label, segmentation
mIoU) to the rows.

Work dirs go under ``--out`` (``DIR/f<fraction>/seed<s>/<model>``); a rerun skips finished stages and
``DIR/paired.json`` holds every row.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rpnet import stages
from rpnet.config import load_config
from rpnet.data.synthetic import generate
from rpnet.demo import synthetic_config
from rpnet.io import read_json, write_json
from rpnet.layout import WorkDir
from rpnet.pipeline.runner import run_pipeline

MODELS = {"baseline": ["model.prototypes=false"],
          "paper": ["model.prototypes=true", "model.variant=paper"],
          "released": ["model.prototypes=true", "model.variant=released"]}
SCORES = ("cam_miou", "cam_miou_best")
LATER_SCORES = ("pseudo_miou", "seg_miou")  # there when --until reaches eval-pseudo / eval-seg
FLAWS = ("cam_part_recall", "cam_body_recall", "cam_context_fp", "cam_background_fp")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample sd / sqrt(n); nan for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd / math.sqrt(n)


def run_one(data: Path, work: Path, seed: int, fraction: float, overrides: list[str], until: str) -> dict:
    cfg = load_config(synthetic_config(), [f"data.root={data}", f"work_dir={work}", f"seed={seed}",
                                            f"data.fraction={fraction}", *overrides])
    run_pipeline(cfg, until=until)
    metrics = read_json(WorkDir(work).metrics)
    row = {key: metrics.get(key) for key in (*SCORES, *FLAWS)}
    return {**row, **{key: metrics[key] for key in LATER_SCORES if key in metrics}}


def summarise(rows: dict, fraction: float, seeds: list[int], models: list[str]) -> str:
    lines = [f"fraction {fraction:g} of the training images, seeds {seeds}"]
    present = [k for k in LATER_SCORES if all(k in r for r in rows.values())]
    for score in (*SCORES, *present):
        lines.append(f"  {score}: " + "  ".join(f"{m} " + " ".join(
            f"{rows[(fraction, s, m)][score]:.1f}" for s in seeds if (fraction, s, m) in rows) for m in models))
        for m in models:
            if m == "baseline":
                continue
            diffs = [rows[(fraction, s, m)][score] - rows[(fraction, s, "baseline")][score] for s in seeds
                     if (fraction, s, m) in rows and (fraction, s, "baseline") in rows]
            if diffs:
                mean, se = mean_se(diffs)
                lines.append(f"    {m} - baseline: {mean:+.2f} +- {se:.2f} (n={len(diffs)}; "
                             + " ".join(f"{d:+.1f}" for d in diffs) + ")")
    for m in models:
        have = [rows[(fraction, s, m)] for s in seeds if (fraction, s, m) in rows]
        if have and all(r[k] is not None for r in have for k in FLAWS):
            lines.append(f"  {m:9s} " + "  ".join(f"{k} {mean_se([r[k] for r in have])[0]:.1f}" for k in FLAWS))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 1.0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-val", type=int, default=60)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config change for every model (e.g. model.pretrained=PATH)")
    parser.add_argument("--until", default="eval-cam", choices=stages.names(), help="last stage (default eval-cam)")
    args = parser.parse_args()
    data = args.out / "data"
    if not (data / "synth.json").exists():
        generate(data, n_train=args.n_train, n_val=args.n_val, seed=0)
    rows: dict[tuple[float, int, str], dict] = {}
    for fraction in args.fractions:
        for seed in args.seeds:
            for model in args.models:
                work = args.out / f"f{fraction:g}" / f"seed{seed}" / model
                rows[(fraction, seed, model)] = run_one(data, work, seed, fraction,
                                                        [*MODELS[model], *args.overrides], args.until)
                print(f"fraction {fraction:g} seed {seed} {model:9s} " + "  ".join(
                    f"{k} {v:.1f}" for k, v in rows[(fraction, seed, model)].items() if v is not None), flush=True)
                write_json(args.out / "paired.json",
                           [{"fraction": f, "seed": s, "model": m, **r} for (f, s, m), r in rows.items()])
        print(summarise(rows, fraction, args.seeds, args.models), flush=True)


if __name__ == "__main__":
    main()
