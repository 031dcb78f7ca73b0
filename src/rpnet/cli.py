"""``rpnet <command> ...``: the command line (see INTERFACE.md).

Pipeline stages share one shape, ``rpnet <stage> CONFIG [--set KEY=VALUE ...]``, and
are looked up in :data:`STAGES`, a plain dict from the stage name to the module whose
``main(cfg)`` runs it. Modules are imported only when their command runs, so
``rpnet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Sequence

from .errors import RpnetError

# Pipeline order (METHOD.md). Each module has ``main(cfg: Config, *, resume: bool)``.
STAGES: dict[str, str] = {
    "train-cam": "rpnet.stages.train_cam",
    "make-cam": "rpnet.stages.make_cam",
    "eval-cam": "rpnet.stages.eval_cam",
    "make-ir-label": "rpnet.stages.make_ir_label",
    "train-irn": "rpnet.stages.train_irn",
    "make-pseudo": "rpnet.stages.make_pseudo",
    "eval-pseudo": "rpnet.stages.eval_pseudo",
}

STAGE_HELP = {
    "train-cam": "stage 1: train the classifier (RPNet, or the plain-CAM baseline)",
    "make-cam": "stage 2: multi-scale CAMs for every training image",
    "eval-cam": "stage 3: CAM mIoU and the best background threshold",
    "make-ir-label": "stage 4: confident foreground/background labels from CAMs (dense CRF)",
    "train-irn": "stage 5: train the inter-pixel relation network (boundaries, displacements)",
    "make-pseudo": "stage 6: pseudo masks by random walk on the IRN boundary map",
    "eval-pseudo": "stage 7: pseudo-mask mIoU",
}

log = logging.getLogger("rpnet")


def _add_stage_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help=STAGE_HELP.get(name, ""), description=STAGE_HELP.get(name, ""))
    p.add_argument("config", type=Path, help="YAML config file (e.g. configs/synthetic.yaml)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set model.backbone=resnet101 (repeatable)",
    )
    p.add_argument("--resume", action="store_true",
                   help="training stages: continue from the last checkpoint (per-image stages always skip finished images)")
    p.set_defaults(command="stage", stage=name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpnet",
        description="Weakly supervised semantic segmentation from image-level tags (RPNet + IRN + DeepLab).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    synth = sub.add_parser(
        "synth", help="write the built-in synthetic dataset (VOC layout, optionally COCO / folder)",
        description="Generate a seeded synthetic dataset that is hard the way real data is.",
    )
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--n-train", type=int, default=200)
    synth.add_argument("--n-val", type=int, default=60)
    synth.add_argument("--size", type=int, default=128, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--format", choices=("voc", "coco", "folder"), default="voc",
                       help="the layout OUT_DIR is written in (default: voc)")
    synth.set_defaults(command="synth")

    for name in STAGES:
        _add_stage_parser(sub, name)

    demo = sub.add_parser("demo", help="the whole pipeline on synthetic data, baseline vs RPNet, on CPU",
                          description="Generate the synthetic dataset and run every stage for the baseline and RPNet.")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    demo.set_defaults(command="demo")
    return parser


def _run_synth(args: argparse.Namespace) -> None:
    from .data.synthetic import generate

    out = generate(
        args.out_dir, n_train=args.n_train, n_val=args.n_val, size=args.size,
        seed=args.seed, fmt=args.format,
    )
    print(f"synthetic dataset written to {out}")


def _run_stage(args: argparse.Namespace) -> None:
    from .config import load_config

    cfg = load_config(args.config, args.overrides)
    module = importlib.import_module(STAGES[args.stage])
    module.main(cfg, resume=args.resume)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S",
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        if args.command == "synth":
            _run_synth(args)
        elif args.command == "stage":
            _run_stage(args)
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args.out)
    except RpnetError as exc:
        print(f"rpnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rpnet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
