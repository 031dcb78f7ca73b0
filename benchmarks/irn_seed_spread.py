"""Stages 4-7 from one work dir's CAMs, once per seed: how far IRN's random start moves the pseudo labels.

    python benchmarks/irn_seed_spread.py CONFIG --out DIR [--seeds 0 1 2 3 4] [--set KEY=VALUE ...]

On the synthetic data IRN trains from random weights (no ImageNet weights here) for a few dozen
steps, and the pseudo labels' mIoU moves by points with ``seed`` alone. A gain of the pseudo
labels over the CAMs smaller than that spread is not shown by one run; this benchmark measures it.

It runs make-ir-label once in ``DIR/seed_<first>`` (the confident labels do not depend on the
seed) and, for each seed S, copies the CAMs and ``metrics.json`` of CONFIG's work dir and those
labels into ``DIR/seed_S`` and runs train-irn, make-pseudo and eval-pseudo there with ``seed=S``,
CONFIG's settings and the ``--set`` overrides. It prints each seed's pseudo-label mIoU, their
mean, standard deviation, minimum and maximum next to the CAMs' mIoU, and writes them to
``DIR/summary.json``. ``rpnet demo`` leaves two work dirs to start from, e.g. CONFIG =
``demo_out/rpnet/config.yaml`` (run from the folder the demo ran in). Figures repeat exactly for
the same seeds and number of threads (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from stage_runs import run_stages, start_from_cams  # this folder is on sys.path when the script runs

from rpnet.config import load_config
from rpnet.io import read_json, write_json
from rpnet.layout import WorkDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="config of a work dir that has run make-cam (and eval-cam)")
    parser.add_argument("--out", type=Path, required=True, help="folder of this benchmark's work dirs (replaced)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="IRN seeds (default 0-4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    source = load_config(args.config, args.overrides)
    if Path(source.work_dir).resolve().is_relative_to(args.out.resolve()):
        parser.error("--out must not hold the config's work dir: it is replaced")
    shutil.rmtree(args.out, ignore_errors=True)

    labels = None
    scores, times = {}, {}
    for seed in args.seeds:
        cfg = load_config(args.config, [*args.overrides, f"work_dir={args.out / f'seed_{seed}'}", f"seed={seed}"])
        start_from_cams(source, cfg)
        stages = ["train-irn", "make-pseudo", "eval-pseudo"]
        if labels is None:
            stages.insert(0, "make-ir-label")
            labels = WorkDir(cfg.work_dir).ir_labels
        else:
            shutil.copytree(labels, WorkDir(cfg.work_dir).ir_labels)
        times[seed] = run_stages(cfg, stages)
        scores[seed] = read_json(WorkDir(cfg.work_dir).metrics)["pseudo_miou"]
        print(f"seed {seed}: pseudo mIoU {scores[seed]:.2f} ({sum(times[seed].values()):.0f} s)", flush=True)

    source_metrics = WorkDir(source.work_dir).metrics
    metrics = read_json(source_metrics) if source_metrics.exists() else {}
    values = np.array(list(scores.values()))
    summary = {
        "config": str(args.config),
        "overrides": args.overrides,
        "cam_miou": metrics.get("cam_miou"),
        "cam_threshold": metrics.get("cam_threshold"),
        "pseudo_miou": {str(s): v for s, v in scores.items()},
        "mean": round(float(values.mean()), 2),
        "std": round(float(values.std(ddof=1)), 2) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "seconds": {str(s): {k: round(v, 1) for k, v in t.items()} for s, t in times.items()},
    }
    write_json(args.out / "summary.json", summary)
    cam = summary["cam_miou"]
    print(f"{args.config}: pseudo mIoU over IRN seeds {args.seeds}: mean {summary['mean']:.2f} "
          f"(std {summary['std']:.2f}, min {summary['min']:.2f}, max {summary['max']:.2f})")
    if cam is not None:
        above = int((values > cam).sum())
        print(f"  CAM mIoU {cam:.2f} at its best threshold {summary['cam_threshold']:g}; "
              f"{above} of {values.size} seeds above it, mean {summary['mean'] - cam:+.2f}")
    print(f"  summary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
