"""Baseline vs RPNet CAMs on the synthetic dataset, same backbone, schedule and seed (issue 3).

    python benchmarks/cam_baseline_vs_rpnet.py [--out DIR] [--set KEY=VALUE ...]

Generates the synthetic dataset (unless DIR/data exists), then for the baseline
(``model.prototypes=false``) and RPNet runs train-cam, make-cam and eval-cam in their own
work dirs, and prints both CAM mIoUs with per-class IoUs, the wall time of each stage, and
the training step cost per image of both models measured on the same batches.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rpnet.config import load_config
from rpnet.data.build import build_dataset
from rpnet.data.sampling import GroupBatchSampler
from rpnet.data.synthetic import generate
from rpnet.data.transforms import collate, train_transform
from rpnet.losses import classifier_loss
from rpnet.models.build import build_classifier
from rpnet.stages import eval_cam, make_cam, train_cam

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
MODELS = {"baseline": ["model.prototypes=false"], "rpnet": ["model.prototypes=true"]}


def step_cost(cfg, batches: int = 6, warmup: int = 2) -> float:
    """Seconds per image of one training step (forward, loss, backward, SGD) on CPU."""
    torch.manual_seed(cfg.seed)
    tc = cfg.train_cam
    data = build_dataset(cfg.data, cfg.data.train_split, train_transform(tc.crop_size, tc.resize_long),
                         for_training=True, seed=cfg.seed)
    sampler = GroupBatchSampler(data.tag_matrix(), cfg.model.group_size, tc.batch_size, cfg.seed)
    plan = list(sampler)[: batches + warmup]
    model = build_classifier(cfg.model, data.num_classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for i, idx in enumerate(plan):
        batch = collate([data[j] for j in idx])
        start = time.perf_counter()
        out = model(batch["image"])
        loss = classifier_loss(out, batch["tags"], model.classifier.weight, lambda_s=cfg.model.lambda_s)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        if i >= warmup:
            times.append((time.perf_counter() - start) / len(idx))
    times.sort()
    return times[len(times) // 2]  # median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("work_dirs/bench_cam"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--skip-cost", action="store_true", help="do not measure the step cost")
    args = parser.parse_args()
    data_root = args.out / "data"
    if not (data_root / "classes.txt").exists():
        generate(data_root, n_train=args.n_train, n_val=20, size=128, seed=0)
    results = {}
    for name, model_overrides in MODELS.items():
        cfg = load_config(CONFIG, [f"data.root={data_root}", f"work_dir={args.out / name}",
                                   *args.overrides, *model_overrides])
        timings = {}
        for stage in (train_cam, make_cam, eval_cam):
            start = time.perf_counter()
            metrics = stage.run(cfg)
            timings[stage.__name__.rsplit(".", 1)[1]] = round(time.perf_counter() - start, 1)
        results[name] = {"metrics": metrics, "seconds": timings,
                         "step_s_per_image": None if args.skip_cost else step_cost(cfg)}
    print("\n== CAM mIoU on the synthetic train set (%) ==")
    base, rp = results["baseline"], results["rpnet"]
    names = list(base["metrics"]["cam_per_class"])
    print(f"{'class':<12}{'baseline':>10}{'rpnet':>10}")
    for n in names:
        b, r = base["metrics"]["cam_per_class"][n], rp["metrics"]["cam_per_class"][n]
        print(f"{n:<12}{b if b is not None else float('nan'):>10.1f}{r if r is not None else float('nan'):>10.1f}")
    print(f"{'mIoU':<12}{base['metrics']['cam_miou']:>10.1f}{rp['metrics']['cam_miou']:>10.1f}")
    print(f"{'threshold':<12}{base['metrics']['cam_threshold']:>10.2f}{rp['metrics']['cam_threshold']:>10.2f}")
    for name in MODELS:
        print(f"{name}: stage seconds {results[name]['seconds']}")
    if not args.skip_cost:
        ratio = rp["step_s_per_image"] / base["step_s_per_image"]
        print(f"training step per image: baseline {base['step_s_per_image'] * 1000:.1f} ms, "
              f"rpnet {rp['step_s_per_image'] * 1000:.1f} ms, ratio {ratio:.3f}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
