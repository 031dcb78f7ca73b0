"""The generalisation suite: the whole pipeline, baseline and RPNet, on synthetic datasets of
different designs (``rpnet synth --profile``), with one config and no per-dataset values.

For each profile and model it runs ``rpnet run configs/synthetic.yaml`` (thresholds ``auto``)
and prints one row: CAM mIoU at the calibrated threshold and at the ground-truth-best one
(an oracle), the calibrated thresholds, pseudo-label mIoU, segmentation val mIoU; with
``--upper-bound`` also DeepLab trained on the ground-truth masks (``train_seg.labels=gt``),
once per profile. Work dirs go under ``--out`` and a rerun skips finished stages.

    python benchmarks/generalisation.py --out /tmp/suite                      # every profile, seed 0
    python benchmarks/generalisation.py --out /tmp/suite --profiles crowded --seeds 0 1 2 --until eval-pseudo
    python benchmarks/generalisation.py --out /tmp/suite --models baseline --set model.pretrained=PRE/backbone.safetensors

On 2 CPU cores one profile takes about 2 x 2 min up to eval-pseudo and 2 x 4 min with train-seg.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rpnet.config import load_config
from rpnet.data.synthetic import SUITE_PROFILES, generate, spec_from_overrides
from rpnet.demo import MODELS, synthetic_config
from rpnet.io import read_json, write_json
from rpnet.layout import WorkDir
from rpnet.pipeline.runner import run_pipeline

COLUMNS = ("cam_miou", "cam_threshold", "cam_miou_best", "cam_threshold_best", "pseudo_miou", "seg_miou")


def run_one(data: Path, work: Path, seed: int, overrides: list[str], until: str | None) -> dict:
    cfg = load_config(synthetic_config(), [f"data.root={data}", f"work_dir={work}", f"seed={seed}", *overrides])
    run_pipeline(cfg, until=until)
    metrics = read_json(WorkDir(work).metrics)
    row = {key: metrics.get(key) for key in COLUMNS}
    for stage in ("make-ir-label", "make-pseudo"):
        path = WorkDir(work).calibration(stage)
        if path.exists():
            row.update({f"{stage.replace('-', '_')}.{k}": v for k, v in read_json(path)["values"].items()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--profiles", nargs="+", default=list(SUITE_PROFILES), choices=list(SUITE_PROFILES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-val", type=int, default=60)
    parser.add_argument("--until", default=None, help="stop after this stage (e.g. eval-pseudo)")
    parser.add_argument("--upper-bound", action="store_true", help="also train DeepLab on the ground truth")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config change for every run (e.g. model.pretrained=PATH from rpnet pretrain)")
    args = parser.parse_args()
    # Rows of earlier invocations into the same --out stay (e.g. --models baseline, then --models rpnet).
    results = read_json(args.out / "suite.json") if (args.out / "suite.json").exists() else {}
    for profile in args.profiles:
        data = args.out / "data" / profile
        if not (data / "synth.json").exists():
            generate(data, n_train=args.n_train, n_val=args.n_val, seed=0, spec=spec_from_overrides(profile))
        for seed in args.seeds:
            for model in args.models:
                work = args.out / profile / f"seed{seed}" / model
                row = run_one(data, work, seed, [f"model.prototypes={str(MODELS[model]).lower()}", *args.overrides],
                              args.until)
                results[f"{profile}/seed{seed}/{model}"] = row
                print(f"{profile:16s} seed {seed} {model:8s} " + "  ".join(
                    f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, (int, float))), flush=True)
            if args.upper_bound:
                work = args.out / profile / f"seed{seed}" / "gt"
                row = run_one(data, work, seed, ["model.prototypes=false", "train_seg.labels=gt", *args.overrides],
                              None)
                results[f"{profile}/seed{seed}/gt"] = {"seg_miou": row["seg_miou"]}
                print(f"{profile:16s} seed {seed} gt-trained seg_miou {row['seg_miou']}", flush=True)
            write_json(args.out / "suite.json", results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
