"""Images per second of the three heavy stages at the paper's sizes, on CPU or one GPU.

    python benchmarks/throughput.py [--device auto|cpu|cuda] [--backbone resnet50]
                                    [--stages train-cam,make-cam,make-pseudo] [--iters N] [--warmup N]
                                    [--batch B] [--cam-batch B] [--threads T] [--no-channels-last] [--no-amp]

What each stage runs, with the project's own code and random weights (speed does not depend on
them) on seeded random inputs already in memory, so that it measures compute, not disk:

- ``train-cam``: one optimiser step of the RPNet classifier (prototype module on, K = 2, output
  stride 16, frozen batch norm as with ImageNet weights) on a batch of 512 x 512 crops, the loss of
  :func:`rpnet.losses.classifier_loss`, SGD; ``--batch`` images per step (16 in the paper);
- ``make-cam``: :func:`rpnet.stages.make_cam.multiscale_cams` on 500 x 375 images (VOC's usual
  size) at the paper's scales 1.0, 0.5, 1.5, 2.0, each with its mirror image, ``--cam-batch``
  images at once, then the per-class max normalisation;
- ``make-pseudo``: IRNet's boundary map of a 500 x 375 image and its mirror, padded to the 512
  training crop, then the random walk (:func:`rpnet.ops.random_walk.pseudo_label_from_walk`,
  beta 10, 256 steps, radius 5) of two classes' stride-4 CAMs.

On CUDA the models run as the stages run them there: channels-last layout and bfloat16 autocast
(float16 where bf16 is unsupported); ``--no-channels-last`` / ``--no-amp`` switch either off. It
prints one row per stage: images/s and seconds per image over ``--iters`` timed iterations after
``--warmup`` untimed ones. The CPU defaults (batch 4, 1 warmup, 2 timed iterations) finish in a
few minutes on 2 cores; iteration counts shrink there, never the image sizes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import torch

from rpnet.config import ModelConfig
from rpnet.engine.trainer import autocast_context
from rpnet.losses import classifier_loss
from rpnet.models.build import build_classifier, build_irn
from rpnet.ops.random_walk import WALK_STRIDE, pseudo_label_from_walk, strided_size
from rpnet.runtime import resolve_device, to_memory_format, use_channels_last
from rpnet.stages.make_cam import multiscale_cams

STAGES = ("train-cam", "make-cam", "make-pseudo")
TRAIN_CROP = 512  # docs/method.md stage 1 crops
VOC_SIZE = (375, 500)  # height, width: the usual PASCAL VOC image
CAM_SCALES = (1.0, 0.5, 1.5, 2.0)  # docs/method.md stage 2
IRN_CROP = 512  # make-pseudo pads each image to IRN's training crop
NUM_CLASSES = 20  # VOC's foreground classes
WALK_KEYS = (2, 11)  # two tagged classes per image
PAPER_LR = 0.02
GROUP_SIZE = 2
SEED = 0


@dataclass(frozen=True)
class Result:
    stage: str
    size: str
    batch: int
    seconds: float  # per timed iteration
    images_per_iter: int

    @property
    def images_per_s(self) -> float:
        return self.images_per_iter / self.seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], None], warmup: int, iters: int, device: torch.device) -> float:
    """Mean seconds per call of ``fn`` over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def classifier(backbone: str, device: torch.device, channels_last: bool) -> torch.nn.Module:
    # Frozen stem and batch norm, as train-cam runs with ImageNet weights.
    cfg = ModelConfig(backbone=backbone, group_size=GROUP_SIZE, freeze_bn=True, freeze_stem=True)
    return to_memory_format(build_classifier(cfg, NUM_CLASSES).to(device), channels_last)


def bench_train_cam(args, device: torch.device, channels_last: bool, amp: bool) -> Result:
    gen = torch.Generator().manual_seed(SEED)
    model = classifier(args.backbone, device, channels_last).train()
    backbone_params, new_params = model.parameter_groups()
    optimizer = torch.optim.SGD([{"params": backbone_params}, {"params": new_params, "lr": 10 * PAPER_LR}],
                                lr=PAPER_LR, momentum=1e-4, weight_decay=1e-4)
    images = torch.randn(args.batch, 3, TRAIN_CROP, TRAIN_CROP, generator=gen).to(device)
    images = to_memory_format(images, channels_last)
    tags = torch.zeros(args.batch, NUM_CLASSES, device=device)
    tags[:, WALK_KEYS[0]] = 1.0  # every pair shares a class, as the group sampler guarantees

    def step() -> None:
        with autocast_context(device, amp):
            out = model(images)
            loss = classifier_loss(out, tags, model.classifier.weight).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = time_it(step, args.warmup, args.iters, device)
    return Result("train-cam", f"{TRAIN_CROP}x{TRAIN_CROP}", args.batch, seconds, args.batch)


def bench_make_cam(args, device: torch.device, channels_last: bool, amp: bool) -> Result:
    gen = torch.Generator().manual_seed(SEED)
    model = classifier(args.backbone, device, channels_last).eval()
    images = torch.randn(args.cam_batch, 3, *VOC_SIZE, generator=gen).to(device)
    keys = torch.tensor(WALK_KEYS, device=device)

    @torch.no_grad()
    def infer() -> None:
        with autocast_context(device, amp):
            strided, high = multiscale_cams(model, to_memory_format(images, channels_last), CAM_SCALES, True)
        for st, hi in zip(strided, high):
            (st[keys] / st[keys].amax(dim=(-2, -1), keepdim=True)).cpu()
            (hi[keys] / hi[keys].amax(dim=(-2, -1), keepdim=True)).cpu()

    seconds = time_it(infer, args.warmup, args.iters, device)
    return Result("make-cam", f"{VOC_SIZE[1]}x{VOC_SIZE[0]}", args.cam_batch, seconds, args.cam_batch)


def bench_make_pseudo(args, device: torch.device, channels_last: bool, amp: bool) -> Result:
    gen = torch.Generator().manual_seed(SEED)
    net = to_memory_format(build_irn(ModelConfig(backbone=args.backbone)).to(device), channels_last).eval()
    image = torch.randn(3, *VOC_SIZE, generator=gen).to(device)
    cams = torch.rand(len(WALK_KEYS), *strided_size(VOC_SIZE, WALK_STRIDE), generator=gen).to(device)
    cams = cams / cams.amax(dim=(-2, -1), keepdim=True)

    @torch.no_grad()
    def label() -> None:
        with autocast_context(device, amp):
            edge = net.predict(image, flip=True, pad_to=IRN_CROP).edge[0]  # (h, w)
        pseudo_label_from_walk(cams, WALK_KEYS, edge.float(), VOC_SIZE).cpu()

    seconds = time_it(label, args.warmup, args.iters, device)
    return Result("make-pseudo", f"{VOC_SIZE[1]}x{VOC_SIZE[0]}", 1, seconds, 1)


BENCHES = {"train-cam": bench_train_cam, "make-cam": bench_make_cam, "make-pseudo": bench_make_pseudo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {list(STAGES)}")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default: 2 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="train-cam images per step (default: 4 CPU, 16 CUDA)")
    parser.add_argument("--cam-batch", type=int, default=None, help="make-cam images at once (default: 1 CPU, 8 CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--no-amp", action="store_true")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in BENCHES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.iters = args.iters or (20 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    args.batch = args.batch or (16 if gpu else 4)
    args.cam_batch = args.cam_batch or (8 if gpu else 1)
    if args.batch % GROUP_SIZE:
        parser.error(f"--batch must be a multiple of the group size {GROUP_SIZE}")
    channels_last = use_channels_last(device, not args.no_channels_last)
    amp = gpu and not args.no_amp
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed sizes: let cuDNN pick its fastest kernels once
        name = torch.cuda.get_device_name(device)
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if amp else "fp32"
    else:
        name, precision = f"CPU, {torch.get_num_threads()} threads", "fp32"
    print(f"# {args.backbone}, {name}, {precision}, channels-last {'on' if channels_last else 'off'}, "
          f"{args.warmup} warm-up + {args.iters} timed iterations, torch {torch.__version__}")
    print(f"{'stage':<12} {'image size':>10} {'batch':>5} {'images/s':>9} {'s/image':>8}")
    for stage in stages:
        r = BENCHES[stage](args, device, channels_last, amp)
        print(f"{r.stage:<12} {r.size:>10} {r.batch:>5} {r.images_per_s:>9.3f} {1 / r.images_per_s:>8.3f}", flush=True)
        if gpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
