"""``rpnet <command> ...``: the command line (README "The pipeline").

Pipeline stages share one shape, ``rpnet <stage> CONFIG [--set KEY=VALUE ...]``, and
come from the stage declarations (:data:`rpnet.stages.STAGES`). Stage modules are imported
only when their command runs, so ``rpnet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import RpnetError
from .layout import stage_folder
from . import stages
from .stages import Stage
from .pipeline.commands import add_config_arguments

log = logging.getLogger("rpnet")

# Errors of the machine or of a path, not of rpnet: one line naming the file and what to do, no traceback.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "the disk is full: free space and run again; finished work is kept",
    errno.EDQUOT: "the disk quota is used up: free space and run again; finished work is kept",
    errno.EROFS: "a read-only file system: choose a work_dir (or --out) on a writable one",
    errno.EACCES: "no permission: choose a folder you may write to",
    errno.ENOTDIR: "a file stands where rpnet needs a folder: move it away",
    errno.EISDIR: "a folder stands where rpnet writes a file: move it away",
}


def _bounded(kind: type, low: float, strict: bool):
    """An argparse ``type`` that parses ``kind`` and refuses values below ``low`` (or equal, with ``strict``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):  # nan and infinities are no values here
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {text}")
        return value
    return parse


positive_int = _bounded(int, 1, strict=False)
count = _bounded(int, 0, strict=False)
positive_float = _bounded(float, 0.0, strict=True)


def _add_stage_parser(sub: argparse._SubParsersAction, stage: Stage) -> None:
    name = stage.name
    p = sub.add_parser(name, help=stage.help, description=f"{stage.help}. Writes WORK_DIR/{stage_folder(name)}/: "
                       f"{stage.outputs}.")
    add_config_arguments(p, override="model.backbone=resnet101")
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
    synth.add_argument("--n-train", type=positive_int, default=200)
    synth.add_argument("--n-val", type=count, default=60)
    synth.add_argument("--size", type=positive_int, default=128, help="image side in pixels")
    synth.add_argument("--seed", type=count, default=0)
    synth.add_argument("--format", choices=("voc", "coco", "folder"), default="voc",
                       help="the layout OUT_DIR is written in (default: voc)")
    synth.add_argument("--profile", default="default",
                       help="the dataset design: default, large-objects, small-context, distinct-bodies, crowded, "
                            "few-classes; pretrain: twelve other classes, for rpnet pretrain (rpnet.data.synthetic.PROFILES)")
    synth.add_argument("--spec", dest="spec", action="append", default=[], metavar="KEY=VALUE",
                       help="change one field of the design, e.g. --spec context_prob=0.8 (repeatable; "
                            "rpnet.data.synthetic.SynthSpec lists them)")
    synth.set_defaults(command="synth")

    for stage in stages.STAGES:
        _add_stage_parser(sub, stage)

    demo = sub.add_parser("demo", help="the whole pipeline on synthetic data, baseline vs RPNet, on CPU",
                          description="Generate the synthetic dataset and run every stage for the baseline and RPNet.")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    demo.set_defaults(command="demo")
    pretrain = sub.add_parser(
        "pretrain", help="pretrain a backbone on generated data of other classes (for model.pretrained)",
        description="Generate OUT/data (12 classes none of which the built-in dataset has), train the plain "
                    "classifier on it in OUT/work and write its backbone to OUT/backbone.safetensors in the "
                    "family's key layout; load it with --set model.pretrained=OUT/backbone.safetensors "
                    "(docs/backbones.md). A rerun reuses the data and resumes the training.")
    pretrain.add_argument("out", type=Path, help="output folder")
    pretrain.add_argument("--backbone", default="resnet18", help="backbone name (model.backbone; default resnet18)")
    pretrain.add_argument("--n-train", type=positive_int, default=3000, help="generated training images (default 3000)")
    pretrain.add_argument("--size", type=positive_int, default=128, help="image side in pixels (default 128)")
    pretrain.add_argument("--seed", type=count, default=1, help="seed of the data and the training (default 1)")
    pretrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="change the training config (configs/synthetic.yaml), e.g. train_cam.epochs=10")
    pretrain.set_defaults(command="pretrain")
    _add_predict_parsers(sub)
    _add_data_parsers(sub)
    from .pipeline.commands import add_parsers as add_pipeline_parsers  # run, status, sweep (its own module)

    add_pipeline_parsers(sub)
    return parser


def _add_predict_parsers(sub: argparse._SubParsersAction) -> None:
    """``rpnet predict`` and ``rpnet export``: the trained segmentation model, no dataset needed."""
    predict = sub.add_parser(
        "predict", help="label images with a trained segmentation model (masks and overlays)",
        description="Write OUT/masks/<name>.png (VOC palette) and OUT/overlays/<name>.jpg for each image. "
                    "A file that cannot be read is reported and skipped; the others are still labelled, "
                    "then the command lists the files that failed and exits with status 1.",
    )
    predict.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders of images")
    predict.add_argument("--weights", type=Path, required=True, help="model.safetensors written by train-seg")
    predict.add_argument("--classes", type=Path, help="class-list file replacing the names stored in the weights")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    predict.add_argument("--scales", type=positive_float, nargs="+", help="inference scales (default: 1.0)")
    predict.add_argument("--flip", action="store_true", help="also run the mirror image and average")
    predict.add_argument("--tile-size", type=positive_int,
                         help="run larger images in overlapping tiles of this side (default 512)")
    predict.add_argument("--tile-overlap", type=count, help="pixels neighbouring tiles share (default 128)")
    predict.add_argument("--max-side", type=positive_int,
                         help="first downscale images whose long side exceeds this (default 4096)")
    predict.set_defaults(command="predict")

    export = sub.add_parser("export", help="export a trained segmentation model to TorchScript or ONNX",
                            description="Normalised images (B, 3, H, W) in, logits (B, C, H, W) out.")
    export.add_argument("--weights", type=Path, required=True, help="model.safetensors written by train-seg")
    export.add_argument("--format", dest="fmt", choices=("onnx", "torchscript"), required=True)
    export.add_argument("--out", type=Path, required=True, help="output file")
    export.set_defaults(command="export")


def _add_data_parsers(sub: argparse._SubParsersAction) -> None:
    """``rpnet check-data`` (the dataset a config names, checked before a run), ``rpnet export-masks`` and
    ``rpnet import-masks``."""
    check = sub.add_parser(
        "check-data", help="check the dataset a config names: what a run would trip on, in seconds",
        description="Read every image and mask of data.train_split and data.eval_split as a run would and report "
                    "images per class, untagged and unreadable images, sizes, masks and overlapping splits. "
                    "Exit status 1 when something would stop a run; warnings do not.",
    )
    add_config_arguments(check, "configs/folder.yaml", "data.root=photos")
    check.add_argument("--json", type=Path, metavar="PATH", help="also write the findings as JSON to PATH")
    check.set_defaults(command="check-data")

    masks = sub.add_parser(
        "export-masks", help="export a run's pseudo masks for review in a labelling tool (PNG, COCO, labelme, CVAT)",
        description="png: OUT/masks/<image name>.png (VOC palette) and OUT/classes.txt; coco: OUT/instances.json, "
                    "one annotation per class present in each image (polygons, RLE where they cannot hold it); "
                    "labelme: OUT/<image name>.json per image; cvat: CVAT's Segmentation mask 1.1 (zip OUT to "
                    "upload). `rpnet import-masks` reads each back.",
    )
    masks.add_argument("work_dir", type=Path, help="the work dir where make-pseudo ran")
    masks.add_argument("--out", type=Path, required=True, help="output folder")
    masks.add_argument("--format", dest="fmt", choices=("png", "coco", "labelme", "cvat"), default="png",
                       help="default: png; coco (polygons), labelme (one JSON per image), cvat (Segmentation mask 1.1)")
    masks.set_defaults(command="export-masks")

    imports = sub.add_parser(
        "import-masks", help="masks outlined in labelme, CVAT or Label Studio into a folder dataset",
        description="Draw labelme JSON files (SRC: a folder of them), a COCO instances file (SRC) or CVAT's "
                    "Segmentation mask 1.1 (SRC: the unzipped folder) into "
                    "OUT/masks/<image>.png, the folder layout's masks, and with --split NAME list the images in "
                    "OUT/NAME.txt (e.g. for data.calibration_split). Every problem is reported at once and nothing "
                    "is written until there is none. docs/own-data.md walks through it.",
    )
    imports.add_argument("src", type=Path, help="labelme: a folder of .json files (or one); coco: the instances .json; "
                         "cvat: the export folder (labelmap.txt, SegmentationClass/)")
    imports.add_argument("--format", dest="fmt", choices=("labelme", "coco", "cvat"), required=True)
    imports.add_argument("--out", type=Path, required=True, help="the folder dataset (with images/ in it)")
    imports.add_argument("--classes", type=Path, default=None,
                         help="class list, background first (default: OUT/classes.txt)")
    imports.add_argument("--split", default=None, metavar="NAME", help="also write OUT/NAME.txt listing the images")
    imports.add_argument("--overwrite", action="store_true", help="replace masks and a split file that differ")
    imports.set_defaults(command="import-masks")


def _run_check_data(args: argparse.Namespace) -> None:
    from .check_data import check_data, findings_json, format_findings
    from .config import load_config
    from .io import write_json

    findings = check_data(load_config(args.config, args.overrides), config=str(args.config))
    print(format_findings(findings))
    if args.json is not None:
        write_json(args.json, findings_json(findings))
    if not findings.ok:
        raise RpnetError(f"check-data: {len(findings.errors)} error(s) above would stop a run")


def _run_export_masks(args: argparse.Namespace) -> None:
    from .mask_export import export_masks

    written, count, missing = export_masks(args.work_dir, args.out, args.fmt)
    print(f"{count} pseudo masks exported to {written}")
    if missing:
        print(f"{len(missing)} images of the split have no pseudo mask yet (make-pseudo unfinished?): "
              f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")


def _run_import_masks(args: argparse.Namespace) -> None:
    from .mask_import import import_masks

    result = import_masks(args.src, args.fmt, args.out, classes=args.classes, split=args.split,
                          overwrite=args.overwrite)
    print(f"{result['masks']} masks imported into {args.out / 'masks'}: {len(result['written'])} file(s) written, "
          f"{len(result['unchanged'])} unchanged" + (f"; images listed in {result['split']} (use it with "
                                                      f"--set data.calibration_split={args.split})"
                                                      if result["split"] else ""))


def _run_predict(args: argparse.Namespace) -> None:
    import numpy as np

    from .engine.distributed import all_reduce_sum, session, world
    from .predict import Predictor, predict_files

    given = {"scales": args.scales, "tile_size": args.tile_size, "tile_overlap": args.tile_overlap,
             "max_side": args.max_side}
    options = {key: value for key, value in given.items() if value is not None}  # the rest: Predictor's defaults
    with session(device=args.device):  # under torchrun: each rank labels its share of the images
        predictor = Predictor.from_weights(args.weights, classes=args.classes, device=args.device, flip=args.flip,
                                           **options)
        written = predict_files(predictor, args.inputs, args.out)
        total = int(all_reduce_sum(np.array([len(written)]))[0])  # every rank's masks
        if world().is_main:
            print(f"{total} masks written to {args.out / 'masks'}, overlays to {args.out / 'overlays'}")


def _run_export(args: argparse.Namespace) -> None:
    from .export import export_model

    print(f"{args.fmt} model written to {export_model(args.weights, args.fmt, args.out)}")


def _run_synth(args: argparse.Namespace) -> None:
    from .data.synthetic import generate, spec_from_overrides

    out = generate(
        args.out_dir, n_train=args.n_train, n_val=args.n_val, size=args.size,
        seed=args.seed, fmt=args.format, spec=spec_from_overrides(args.profile, args.spec),
    )
    print(f"synthetic dataset written to {out}")


def _run_stage(args: argparse.Namespace) -> None:
    from .config import load_config
    from .engine.distributed import session, world
    from .pipeline.runner import run_stage
    from .pipeline.state import stage_statuses
    from .workdir import writing

    cfg = load_config(args.config, args.overrides)
    # Under torchrun (WORLD_SIZE set) every rank joins the process group here; otherwise a no-op.
    with session(cfg.engine.backend, cfg.device), writing(cfg.work_dir, main=world().is_main) as work:
        # The stage between the runner's records, as `rpnet run` runs it: `rpnet status` and the
        # report then see it done (or partial, if it stops), and `rpnet run` skips or continues it.
        status = stage_statuses(cfg)[args.stage]
        run_stage(cfg, args.stage, status, resume=args.resume, main=world().is_main)
    print(f"rpnet {args.stage}: done; `rpnet status {work}` shows where the work dir stands")


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
        elif args.command == "predict":
            _run_predict(args)
        elif args.command == "export":
            _run_export(args)
        elif args.command == "check-data":
            _run_check_data(args)
        elif args.command == "export-masks":
            _run_export_masks(args)
        elif args.command == "import-masks":
            _run_import_masks(args)
        elif args.command in ("run", "status", "sweep"):
            from .pipeline.commands import run_command

            run_command(args)
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args.out)
        elif args.command == "pretrain":
            from .pretrain import pretrain_backbone

            pretrain_backbone(args.out, backbone=args.backbone, n_train=args.n_train, size=args.size, seed=args.seed,
                              overrides=args.overrides)
    except RpnetError as exc:
        print(f"rpnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rpnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rpnet status W | head`: the reader has gone, nothing more to say
        try:  # and Python's own flush of stdout at exit must not fail on the closed pipe either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rpnet: error: {where}{exc.strerror} ({ENVIRONMENT_ERRORS[exc.errno]})", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # torch.save reports a full disk as a C++ stream error
        if "basic_ios" not in str(exc) and "file write failed" not in str(exc):
            raise
        print(f"rpnet: error: a file could not be written ({exc}): is the disk full? Free space and run again; "
              "finished work is kept", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
