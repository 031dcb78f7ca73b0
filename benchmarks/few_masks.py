"""A few masks: what a calibration split of k images buys on each design of the generalisation suite.

For each design (``rpnet synth --profile``) and model (baseline, RPNet) the classifier and its CAMs are
trained once (``OUT/<design>/<model>/base``, stages 1-2). Then, for k = 0 (no masks: the label-free
rules) and for each k > 0 and draw d, ``data.calibration_split`` names k training images drawn at random
(``fewmasks_k<k>_d<d>.txt``, seeded by (k, d), written into the dataset before any run so that every
draw sees the same data fingerprint), and the rest of the pipeline runs in ``OUT/<design>/<model>/k<k>_d<d>``
(a copy of the base made of hard links) with ``configs/synthetic.yaml``: every threshold ``auto``,
``pseudo.source: auto``. Segmentation (train-seg, eval-seg) runs for the ks in ``--seg-ks`` only.

Printed per run, everything scored on the training images outside the calibration split:

- ``t`` / ``cam``: the CAM threshold the run used and its CAM mIoU; ``oracle t`` / ``oracle``: the best
  threshold of the same 0.01 grid chosen by looking at those images' masks (no run can do this);
- ``src``: the label source make-pseudo chose; ``pseudo``: the mIoU of the masks it wrote;
  ``walk oracle``: the walk's labels at their best background score on those images;
- ``seg``: segmentation val mIoU (the 60 validation images);
- ``est [lo, hi]``: the estimate of ``cam`` (and of ``pseudo``) from the k calibration images, with
  its 90 % interval, and whether the interval holds the true figure.

    python benchmarks/few_masks.py --out /tmp/fm                              # all designs, both models
    python benchmarks/few_masks.py --out /tmp/fm --profiles default --ks 0 10 --seg-ks 0 10
    python benchmarks/few_masks.py --out /tmp/fm --summary        # the means per design, from few_masks.json

``OUT/few_masks.json`` keeps every row (a rerun adds to it; finished stages are skipped). On 2 CPU cores a
base takes about 3 min, a draw about 2 min up to eval-pseudo and 2 min more with segmentation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from rpnet.calibration import MASK_CANDIDATES, label_evidence
from rpnet.config import load_config
from rpnet.data.build import build_dataset, outside_calibration_split
from rpnet.data.synthetic import SUITE_PROFILES, generate, spec_from_overrides
from rpnet.data.voc import SPLIT_FOLDER, read_split
from rpnet.demo import MODELS, synthetic_config
from rpnet.io import atomic_write_text, read_json, write_json
from rpnet.layout import WorkDir, load_cams
from rpnet.ops.calibration import miou_of
from rpnet.pipeline.runner import run_pipeline
from rpnet.stages.make_pseudo import load_scores

DRAW_SPLIT = "fewmasks_k{k}_d{d}"


def draw_split(data: Path, k: int, d: int) -> str:
    """Write (once) and name the split of draw d of k training images: seeded by (k, d), sorted."""
    name = DRAW_SPLIT.format(k=k, d=d)
    path = data / SPLIT_FOLDER / f"{name}.txt"
    if not path.exists():
        train = read_split(data / SPLIT_FOLDER / "train.txt")
        ids = sorted(np.random.default_rng([k, d]).choice(train, k, replace=False).tolist())
        atomic_write_text(path, "".join(f"{i}\n" for i in ids))
    return name


def config(data: Path, work: Path, model: str, overrides: list[str]):
    return load_config(synthetic_config(), [f"data.root={data}", f"work_dir={work}", "seed=0",
                                            f"model.prototypes={str(MODELS[model]).lower()}", *overrides])


def oracle(cfg, scores_of) -> tuple[float, float]:
    """(the best threshold of the 0.01 grid, its mIoU) on the training images outside the calibration split,
    for the labels ``scores_of(image_id) -> (scores (K, H, W), keys)`` give against a constant background."""
    images = outside_calibration_split(build_dataset(cfg.data, cfg.data.train_split, masks=True), cfg.data)
    evidence = label_evidence(((*scores_of(r.id), images[i]["mask"]) for i, r in enumerate(images.records)),
                              MASK_CANDIDATES, images.num_classes + 1)
    mious = miou_of(evidence.sum(axis=1)) * 100
    best = int(np.argmax(mious))
    return float(MASK_CANDIDATES[best]), round(float(mious[best]), 2)


def row_of(cfg) -> dict:
    work = WorkDir(cfg.work_dir)
    metrics = read_json(work.metrics)
    cam_t, cam_best = oracle(cfg, lambda i: (load_cams(work.cam(i)).high_res, load_cams(work.cam(i)).keys))

    def walked(image_id):
        keys, scores = load_scores(work.walks / f"{image_id}.npz")
        return scores.numpy(), keys

    _, walk_best = oracle(cfg, walked)
    pseudo = read_json(work.calibration("make-pseudo"))
    row = {key: metrics.get(key) for key in ("cam_threshold", "cam_miou", "cam_images", "pseudo_miou", "seg_miou",
                                             "cam_miou_estimate", "cam_miou_estimate_low", "cam_miou_estimate_high",
                                             "pseudo_miou_estimate", "pseudo_miou_estimate_low",
                                             "pseudo_miou_estimate_high")}
    row.update({"cam_oracle_threshold": cam_t, "cam_oracle": cam_best, "walk_oracle": walk_best,
                "source": (pseudo.get("masks") or {}).get("source", "walk"),
                "fg_threshold": read_json(work.calibration("make-ir-label"))["values"]["fg_threshold"],
                "bg_threshold": pseudo["values"]["bg_threshold"]})
    for prefix in ("cam", "pseudo"):
        low, high = row[f"{prefix}_miou_estimate_low"], row[f"{prefix}_miou_estimate_high"]
        row[f"{prefix}_covered"] = None if low is None else bool(low <= row[f"{prefix}_miou"] <= high)
    return row


def fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_row(name: str, row: dict) -> None:
    def estimate(prefix):
        if row[f"{prefix}_miou_estimate"] is None:
            return "-"
        return (f"{row[f'{prefix}_miou_estimate']:.1f} [{row[f'{prefix}_miou_estimate_low']:.1f}, "
                f"{row[f'{prefix}_miou_estimate_high']:.1f}] {'in' if row[f'{prefix}_covered'] else 'OUT'}")

    print(f"{name:34s} t {fmt(row['cam_threshold'], '.2f')} cam {fmt(row['cam_miou'])} | oracle t "
          f"{row['cam_oracle_threshold']:.2f} {row['cam_oracle']:.1f} | src {row['source']:4s} pseudo "
          f"{fmt(row['pseudo_miou'])} walk oracle {row['walk_oracle']:.1f} | seg {fmt(row['seg_miou'])} | "
          f"est cam {estimate('cam')} pseudo {estimate('pseudo')}", flush=True)


def summary(results: dict, k: int, tag: str = "") -> str:
    """Per design and model, the means over the draws of k masks against k = 0: the issue's checks.
    ``tag``: the variant (``--tag``) whose rows to summarise; k = 0 is always the untagged run."""
    lines = [f"k = {k}{f' ({tag})' if tag else ''}, means over draws; scored on the training images outside each "
             "calibration split",
             "design           model     CAM chosen/oracle  pseudo / max(oracles)-1.5  seg k=0 -> k   "
             "cam est in  pseudo est in  sources"]
    keys = sorted({key.rsplit("/", 1)[0] for key in results}, key=lambda dm: (SUITE_PROFILES.index(dm.split("/")[0])
                                                                             if dm.split("/")[0] in SUITE_PROFILES
                                                                             else 99, dm))
    for design_model in keys:
        runs = [r for key, r in results.items() if key.startswith(design_model + "/") and r["k"] == k
                and r.get("tag", "") == tag]
        base = results.get(f"{design_model}/k0")
        if not runs or base is None:
            continue
        mean = {name: float(np.mean([r[name] for r in runs])) if all(r[name] is not None for r in runs) else None
                for name in ("cam_miou", "cam_oracle", "pseudo_miou", "walk_oracle", "seg_miou")}
        bar = max(mean["cam_oracle"], mean["walk_oracle"]) - 1.5
        seg = "-" if mean["seg_miou"] is None or base["seg_miou"] is None else \
            f"{base['seg_miou']:.1f} -> {mean['seg_miou']:.1f}"
        covered = {p: sum(bool(r[f"{p}_covered"]) for r in runs) for p in ("cam", "pseudo")}
        design, model = design_model.split("/")
        lines.append(f"{design:16s} {model:8s}  {mean['cam_miou']:5.1f} / {mean['cam_oracle']:5.1f}      "
                     f"{mean['pseudo_miou']:5.1f} / {bar:5.1f} {'ok' if mean['pseudo_miou'] >= bar else 'BELOW'}"
                     f"       {seg:14s}  {covered['cam']}/{len(runs)}         {covered['pseudo']}/{len(runs)}"
                     f"          {' '.join(r['source'] for r in runs)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--profiles", nargs="+", default=list(SUITE_PROFILES), choices=list(SUITE_PROFILES))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ks", nargs="+", type=int, default=[0, 5, 10, 20])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--seg-ks", nargs="*", type=int, default=[0, 5, 10, 20],
                        help="the ks whose runs go on to train-seg and eval-seg (the others stop after eval-pseudo)")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-val", type=int, default=60)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--summary", action="store_true", help="print the summary of OUT/few_masks.json, run nothing")
    parser.add_argument("--tag", default="", help="a variant's name (with --set): its runs go to k<k>_d<d>-TAG, "
                                                  "copied from the untagged run of the same draw when it exists")
    args = parser.parse_args()
    results_path = args.out / "few_masks.json"
    results = read_json(results_path) if results_path.exists() else {}
    if args.summary:
        for tag in sorted({r.get("tag", "") for r in results.values()}):
            for k in sorted({r["k"] for r in results.values() if r.get("tag", "") == tag} - {0}):
                print(summary(results, k, tag), end="\n\n")
        return
    for profile in args.profiles:
        data = args.out / "data" / profile
        if not (data / "synth.json").exists():
            generate(data, n_train=args.n_train, n_val=args.n_val, seed=0, spec=spec_from_overrides(profile))
        draws = [(k, d) for k in args.ks for d in (range(args.draws) if k else [0])]
        splits = {(k, d): draw_split(data, k, d) for k, d in draws if k}  # all of them before any run
        for model in args.models:
            base = args.out / profile / model / "base"
            run_pipeline(config(data, base, model, args.overrides), until="make-cam")
            for k, d in draws:
                plain = f"k{k}_d{d}" if k else "k0"
                name = f"{plain}-{args.tag}" if args.tag else plain
                work = args.out / profile / model / name
                if not work.exists():  # the classifier and CAMs (and a variant's unchanged stages), shared
                    source = args.out / profile / model / plain if args.tag else base
                    shutil.copytree(source if source.exists() else base, work, copy_function=os.link)
                extra = [f"data.calibration_split={splits[(k, d)]}"] if k else []
                cfg = config(data, work, model, [*args.overrides, *extra])
                clock = time.perf_counter()
                run_pipeline(cfg, until=None if k in args.seg_ks else "eval-pseudo")
                row = {**row_of(cfg), "k": k, "draw": d, "tag": args.tag,
                       "seconds": round(time.perf_counter() - clock, 1)}
                results[f"{profile}/{model}/{name}"] = row
                write_json(results_path, results)
                print_row(f"{profile} {model} {name}", row)


if __name__ == "__main__":
    main()
