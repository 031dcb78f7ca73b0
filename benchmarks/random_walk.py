"""Stage 6's random walk: the project's sparse stencil walk vs IRN's dense T ** 256 (issue: boundary refinement).

    python benchmarks/random_walk.py [--size 500x375] [--quick] [--threads 2] [--seed 0]

For one image of ``--size`` (width x height; VOC's typical 500x375 by default) it builds
seeded stride-4 inputs: two max-normalised CAMs (smooth blobs that spill over their
objects, as real CAMs do) and a boundary map with the outlines of two objects and a few
straight lines. Then, each in its own fresh Python process so that peak memory can be read
from ``ru_maxrss``:

1. ``sparse``: :func:`rpnet.ops.random_walk.pseudo_label_from_walk`, exactly as make-pseudo
   calls it (transition stencil, 256 walk steps, upsampling, global max, background score);
2. ``dense``: IRN's ``propagate_to_edge``: the dense (N, N) affinity matrix, raised to beta,
   column-normalised and squared 8 times (T ** 256) with ``torch.matmul``, the CAMs times
   T ** 256, and IRN's post-processing (the same upsampling, global max and background score).

It prints the per-image time and peak memory of both (the peak is the process's maximum
resident set size during the method minus its maximum before it, after imports and inputs),
the speed-up, and the pixel agreement of the two masks. The dense method costs about
16 N^3 floating-point operations (26 TFLOP at 500x375) and 2 N^2 floats of memory, so it
runs once; ``--quick`` uses a 160x120 image for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rpnet.config import PseudoConfig
from rpnet.io import load_npz, save_npz
from rpnet.ops.affinity import boundary_to_affinity, path_index
from rpnet.ops.random_walk import EPS, WALK_STRIDE, pseudo_label_from_walk

WALK_RADIUS, WALK_BETA, WALK_STEPS = PseudoConfig.radius, PseudoConfig.beta, PseudoConfig.steps  # IRN's, the defaults
BG_THRESHOLD = 0.25  # IRN's VOC value (the config's default is auto: calibrated from the walked scores)

DEFAULT_SIZE = "500x375"  # width x height: the usual PASCAL VOC image
QUICK_SIZE = "160x120"
DEFAULT_THREADS = 2
KEYS = (2, 11)  # two foreground classes (0-based), as in a VOC image with a cat and a person
SQUARINGS = int(math.log2(WALK_STEPS))  # IRN's exp_times: T squared 8 times is T ** 256
KIB = 1024  # ru_maxrss is in KiB on Linux
MIB = 1024 * 1024
EDGE_WIDTH = 1.0  # std (stride-4 pixels) of a boundary's profile across it
EDGE_NOISE = 0.05  # spurious weak boundary responses everywhere
CAM_SPREAD = 1.6  # a CAM blob's std, relative to its object's radii: CAMs spill over the object
NUM_LINES = 3
SPARSE_REPEATS = 3  # the sparse walk is fast: report the median of a few runs


def parse_size(text: str) -> tuple[int, int]:
    """'500x375' (width x height) -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 500x375 (width x height), got {text!r}") from None
    if width < WALK_STRIDE * 4 or height < WALK_STRIDE * 4:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small: at least {WALK_STRIDE * 4} px a side")
    return height, width


def make_inputs(image_size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded stride-4 inputs for an image of (H, W): cams (2, h, w), keys (2,), edge (h, w) in [0, 1].

    Two elliptic objects; the boundary map is high on their outlines and on a few straight
    lines, with weak noise elsewhere; each CAM is a Gaussian blob at one object's centre,
    wider than the object, max-normalised.
    """
    rng = np.random.default_rng(seed)
    h, w = (math.ceil(s / WALK_STRIDE) for s in image_size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dist = np.full((h, w), np.inf)
    cams = []
    for i in range(len(KEYS)):
        cy = rng.uniform(0.3, 0.7) * h
        cx = (0.15 + 0.5 * i + rng.uniform(0.0, 0.2)) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.1, 0.2) * w
        radius = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        # distance to the outline, approximately, in pixels
        dist = np.minimum(dist, np.abs(radius - 1) * min(ry, rx))
        cam = np.exp(-0.5 * (((yy - cy) / (CAM_SPREAD * ry)) ** 2 + ((xx - cx) / (CAM_SPREAD * rx)) ** 2))
        cams.append(cam / cam.max())
    for _ in range(NUM_LINES):
        angle = rng.uniform(0, math.pi)
        py, px = rng.uniform(0, h), rng.uniform(0, w)
        dist = np.minimum(dist, np.abs((yy - py) * math.cos(angle) - (xx - px) * math.sin(angle)))
    edge = np.exp(-0.5 * (dist / EDGE_WIDTH) ** 2) + EDGE_NOISE * rng.random((h, w))
    edge = np.clip(edge, 0.0, 1.0)
    return (torch.from_numpy(np.stack(cams)).float(), torch.tensor(KEYS), torch.from_numpy(edge).float())


def sparse_pseudo_label(cams: torch.Tensor, keys: torch.Tensor, edge: torch.Tensor,
                        image_size: tuple[int, int]) -> torch.Tensor:
    """The project's walk as make-pseudo runs it -> (H, W) uint8 mask."""
    return pseudo_label_from_walk(cams, keys, edge, image_size, radius=WALK_RADIUS, beta=WALK_BETA,
                                  steps=WALK_STEPS, bg_threshold=BG_THRESHOLD)


def dense_transition(edge: torch.Tensor, radius: int = WALK_RADIUS, beta: float = WALK_BETA) -> torch.Tensor:
    """IRN's to_transition_matrix: the dense (N, N) T ** 256, N = h*w, built and squared in float32.

    A[p, q] = A[q, p] = the path affinity of every pair less than ``radius`` apart, A[p, p] = 1,
    raised to ``beta`` and each column divided by its sum, then squared ``SQUARINGS`` times.
    """
    h, w = edge.shape
    n = h * w
    aff = boundary_to_affinity(edge, radius)  # (O, h, w): pixel p -> p + offset, 0 off the map
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dense = torch.zeros(n, n)
    for k, (dy, dx) in enumerate(path_index(radius).offsets):
        ty, tx = ys + dy, xs + dx
        inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        src, dst = (ys * w + xs)[inside], (ty * w + tx)[inside]
        dense[src, dst] = aff[k][inside]
        dense[dst, src] = aff[k][inside]
    dense.diagonal().fill_(1.0)
    dense.pow_(beta)
    dense.div_(dense.sum(dim=0, keepdim=True))
    for _ in range(SQUARINGS):
        dense = torch.matmul(dense, dense)  # the old matrix is freed as the name moves on
    return dense


def dense_pseudo_label(cams: torch.Tensor, keys: torch.Tensor, edge: torch.Tensor,
                       image_size: tuple[int, int]) -> torch.Tensor:
    """IRN's propagate_to_edge and make_sem_seg_labels with the dense T ** 256 -> (H, W) uint8 mask."""
    height, width = image_size
    c, h, w = cams.shape
    walked = torch.matmul((cams * (1 - edge)).reshape(c, h * w), dense_transition(edge)).reshape(c, 1, h, w)
    up = F.interpolate(walked, scale_factor=WALK_STRIDE, mode="bilinear", align_corners=False)
    up = up[:, 0, :height, :width]
    up = up / up.max().clamp_min(EPS)
    scores = F.pad(up, (0, 0, 0, 0, 1, 0), value=BG_THRESHOLD)
    labels = torch.cat([torch.zeros(1, dtype=torch.long), keys + 1])
    return labels[scores.argmax(dim=0)].to(torch.uint8)


METHODS = {"sparse": sparse_pseudo_label, "dense": dense_pseudo_label}
LABELS = {"sparse": f"sparse stencil walk ({WALK_STEPS} steps)",
          "dense": f"dense T^{WALK_STEPS} ({SQUARINGS} squarings)"}


def max_rss_bytes() -> int:
    """The process's peak resident set size so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def worker(method: str, image_size: tuple[int, int], seed: int, threads: int, out: Path) -> None:
    """Runs one method in this (fresh) process and saves its mask, time and peak memory to ``out``."""
    torch.set_num_threads(threads)
    cams, keys, edge = make_inputs(image_size, seed)
    fn = METHODS[method]
    fn(cams[:, :8, :8], keys, edge[:8, :8], (8 * WALK_STRIDE, 8 * WALK_STRIDE))  # warm up kernels
    before = max_rss_bytes()
    repeats = SPARSE_REPEATS if method == "sparse" else 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mask = fn(cams, keys, edge, image_size)
        times.append(time.perf_counter() - start)
    peak = max_rss_bytes() - before
    save_npz(out, mask=mask.numpy(), seconds=np.array(sorted(times)[len(times) // 2]), peak_bytes=np.array(peak))


def run_in_subprocess(method: str, size: str, seed: int, threads: int, out: Path) -> dict[str, np.ndarray]:
    """Runs :func:`worker` in a fresh interpreter and returns what it saved."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--size", size,
           "--seed", str(seed), "--threads", str(threads), "--result", str(out)]
    subprocess.run(cmd, check=True)
    return load_npz(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default=DEFAULT_SIZE, help="image width x height (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_SIZE} image, for a smoke run")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = QUICK_SIZE if args.quick else args.size
    image_size = parse_size(size)
    if args.worker:
        worker(args.worker, image_size, args.seed, args.threads, args.result)
        return

    h, w = (math.ceil(s / WALK_STRIDE) for s in image_size)
    n = h * w
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            print(f"running {method} ...", file=sys.stderr, flush=True)
            results[method] = run_in_subprocess(method, size, args.seed, args.threads, Path(tmp) / f"{method}.npz")
    sparse, dense = results["sparse"]["mask"], results["dense"]["mask"]
    agree = float((sparse == dense).mean())
    speedup = float(results["dense"]["seconds"]) / float(results["sparse"]["seconds"])
    print(f"\n== random walk per image: {size} image, stride-4 maps {h}x{w} (N = {n:,} positions), "
          f"{len(KEYS)} classes + background, {args.threads} threads, seed {args.seed} ==")
    print(f"dense T^{WALK_STEPS}: {2 * SQUARINGS * n ** 3 / 1e12:.3g} TFLOP, {n * n * 4 / MIB:,.0f} MiB per matrix")
    print(f"{'method':<34}{'time (s)':>12}{'peak memory (MiB)':>20}")
    for method, res in results.items():
        print(f"{LABELS[method]:<34}{float(res['seconds']):>12.3f}{int(res['peak_bytes']) / MIB:>20.1f}")
    print(f"speed-up of the sparse walk: {speedup:,.1f}x")
    print(f"mask agreement: {100 * agree:.4f}% ({int((sparse != dense).sum())} of {sparse.size:,} pixels differ)")
    print(json.dumps({"size": size, "positions": n, "threads": args.threads, "speedup": round(speedup, 1),
                      "agreement": agree,
                      **{f"{m}_seconds": round(float(r["seconds"]), 4) for m, r in results.items()},
                      **{f"{m}_peak_mib": round(int(r["peak_bytes"]) / MIB, 1) for m, r in results.items()}}))


if __name__ == "__main__":
    main()
