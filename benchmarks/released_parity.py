"""rpnet's `model.variant: released` against the authors' released RPNet code, on the same weights and inputs.

    python benchmarks/released_parity.py RELEASED_CHECKOUT [--out tests/fixtures/released_parity.npz] [--seed 0]

RELEASED_CHECKOUT is a work tree of github.com/liuweide01/RPNet-Weakly-Supervised-Segmentation
(read at commit 52d74e3), e.g. ``git clone`` it, or ``git archive HEAD | tar -x -C DIR`` from a
bare copy. Its code never enters this repository: this script imports it from that folder at run
time, and writes only plain arrays (``np.savez``, no pickle) to ``--out``, the fixture that
``tests/models/test_released_parity.py`` checks rpnet against without the released code.

What the script does:

1. Builds a small backbone: their own ``net.resnext.ResNet`` with one Bottleneck per stage and
   width per group 4 (block4 still has 2048 channels, as their 1x1 reduction expects); their
   ``Net`` hard-codes an ImageNet-pretrained ResNeXt-101 32x8d, so ``net.resnext.resnext101_32x8d``
   is replaced, in this process only, by a function that returns this small ResNet. rpnet gets
   the same architecture (``rpnet.models.backbones.ResNet``, frozen batch norm, output stride 16;
   with one block in layer4 rpnet's dilation does not arise, so the two backbones compute the same).
2. Fills rpnet's released-reading classifier (``ModelConfig(variant="released")``, 20 classes as
   their code hard-codes) with :func:`rpnet.models.seeded.seeded_state_dict` and copies every
   tensor into their ``Net_CAM`` through an explicit key map (their unused layers ``mask_t``,
   ``mask``, ``cross_atten``, ``pre_x``, ``pre_y`` keep their own random values). The non-local
   blocks' batch-norm scales are seeded non-zero, so those blocks are not the identity.
3. Makes dropout reproducible: their ``cal_cos_vector_part`` thins the mask with ``F.dropout(p=0.5)``.
   Their module's ``F`` is swapped (in this process) for a proxy whose ``dropout`` multiplies by a
   0/1 draw Z from a seeded ``RandomState`` and by 1 / (1 - p), exactly what dropout computes; every
   Z is recorded in call order (per forward: block4 image, block4 partner, block2 image, block2
   partner; forwards at scales 1, 0.5, 1.5, 2). rpnet's ``RPNetClassifier.draw_keep`` is replaced by
   a function that returns the same Z for the same level, image and scale.
4. Runs both in training mode on two pairs of 64 x 80 random images (all their modules are in
   training mode: their ``Net.train`` never passes the mode on, so the non-local blocks' batch norm
   uses batch statistics, as rpnet's does in ``train()``).
5. Their loss terms are computed by their own lines: the block of ``step/train_cam.py`` from
   ``N, C, H, W = x_cam.size()`` to ``loss = loss1 + loss2 + loss_x + loss_y`` is read from the file
   and executed on their model's outputs (importing that module would need their VOC data loader).
6. Prints the largest absolute difference of each compared quantity and writes the fixture.

rpnet's loss terms are means over all the images of the batch; theirs are summed over the two
positions of the pair (``loss1 + loss2``, ``loss_x + loss_y``), so rpnet's L_c on the anchors
alone is their ``loss1``, and its total over the whole batch is half their ``loss``.
No torchvision is needed (their code at that commit does not import it on this path).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rpnet.config import ModelConfig
from rpnet.losses import classifier_loss
from rpnet.models.backbones.resnet import Bottleneck, FrozenBatchNorm2d, ResNet
from rpnet.models.rpnet import PrototypeSettings, RPNetClassifier
from rpnet.models.seeded import seeded_images, seeded_state_dict
from rpnet.ops import prototypes as P

NUM_CLASSES = 20  # their classifiers are nn.Conv2d(mid, 20, ...)
LAYERS = (1, 1, 1, 1)
WIDTH_PER_GROUP = 4
PAIRS, HEIGHT, WIDTH = 2, 64, 80
SCALES = (1.0, 0.5, 1.5, 2.0)  # their Net_CAM's forwards, in call order
DRAW_ORDER = (("block4", 0), ("block4", 1), ("block2", 0), ("block2", 1))  # (level, position in the pair)
UNUSED = ("mask_t.", "mask.", "cross_atten.", "pre_x.", "pre_y.")  # built by their Net, never called
CONSTANT = ("gauss.weight",)  # their Gaussian kernel, a buffer they compute
NON_LOCAL = {"g": "value", "theta": "query", "phi": "key", "W.0": "out", "W.1": "norm"}
LOSS_START, LOSS_END = "N, C, H, W = x_cam.size()", "loss = loss1 + loss2 + loss_x + loss_y"


def build_rpnet(mid: int) -> RPNetClassifier:
    """rpnet's released reading on the small backbone, block4 reduced to ``mid`` channels (the test's model)."""
    backbone = ResNet(Bottleneck, LAYERS, num_classes=None, width_per_group=WIDTH_PER_GROUP, output_stride=16,
                      norm_layer=FrozenBatchNorm2d, freeze_stem=True)
    config = ModelConfig(variant="released") if mid == 512 else ModelConfig(variant="released", reduce_dim=mid)
    settings = PrototypeSettings.from_config(config)
    return RPNetClassifier(backbone, NUM_CLASSES, settings, detach_block2=True)


def their_key(key: str) -> str | None:
    """rpnet's state-dict key -> the released Net's, or None for a key their Net does not have."""
    if key.startswith("backbone."):
        return "resnet50." + key.removeprefix("backbone.")
    if key == "reduce.weight":
        return "downsample.weight"
    if key == "classifier.weight":
        return "classifierx.weight"
    if key == "partner_classifiers.0.weight":
        return "classifiery.weight"
    if key.startswith("non_local."):
        _, branch, role, part, rest = key.split(".", 4)
        block = {"original": "self_atten_", "enhanced": "cross_atten_"}[branch] + "xy"[int(role)]
        theirs = {v: k for k, v in NON_LOCAL.items()}[part]
        return f"{block}.{theirs}.{rest}"
    return None


class KnownDropout:
    """torch.nn.functional with ``dropout`` replaced by seeded, recorded 0/1 draws."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.RandomState(seed)
        self.draws: list[np.ndarray] = []

    def __getattr__(self, name):
        return getattr(F, name)

    def dropout(self, input, p=0.5, training=True, inplace=False):  # noqa: A002 - F.dropout's signature
        z = (self.rng.random_sample(tuple(input.shape)) >= p).astype(np.float32)
        self.draws.append(z)
        return input * torch.from_numpy(z) / (1 - p)


def loss_lines(root: Path) -> str:
    text = (root / "step" / "train_cam.py").read_text()
    start, end = text.index(LOSS_START), text.index(LOSS_END) + len(LOSS_END)
    line_start = text.rindex("\n", 0, start) + 1
    return textwrap.dedent(text[line_start:end])


def run(root: Path, seed: int, mid: int) -> dict[str, np.ndarray]:
    """Their model and rpnet's on the same weights, inputs and draws; the fixture's arrays for one case."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    resnext = importlib.import_module("net.resnext")
    cam_module = importlib.import_module("net.resnet50_cam")
    resnext.resnext101_32x8d = lambda pretrained=False, **kw: resnext.ResNet(
        resnext.Bottleneck, list(LAYERS), groups=1, width_per_group=WIDTH_PER_GROUP)
    cam_module.mid = mid  # read by Net.__init__: the width of their reduction, non-local blocks, classifiers
    dropout = KnownDropout(seed + 1)
    cam_module.F = dropout

    torch.manual_seed(seed)
    theirs = cam_module.Net_CAM()
    rp = build_rpnet(mid)
    state = seeded_state_dict(rp, seed)
    rp.load_state_dict(state)
    their_state = theirs.state_dict()
    mapped = {}
    for key, value in state.items():
        target = their_key(key)
        if target is None:
            raise SystemExit(f"rpnet key {key} has no counterpart in the released Net")
        if their_state[target].shape != value.shape:
            raise SystemExit(f"{key} -> {target}: shapes {tuple(value.shape)} vs {tuple(their_state[target].shape)}")
        mapped[target] = value
    theirs.load_state_dict(mapped, strict=False)
    after = theirs.state_dict()
    aliases = ("stage1.", "stage2.", "stage3.", "stage4.", "backbone.", "newly_added.")
    for key in after:  # every parameter their forward uses came from rpnet's weights
        if key in mapped:
            assert torch.equal(after[key], mapped[key]), key
        elif key not in CONSTANT and not key.startswith(UNUSED + aliases):
            raise SystemExit(f"released key {key} was not filled from rpnet's weights")

    # Record their internals: Net.forward's outputs per call and cal_mask's foreground maps.
    forwards, masks = [], []
    net_forward, cal_mask = cam_module.Net.forward, theirs.cal_mask

    def recording_forward(self, x, y):
        out = net_forward(self, x, y)
        forwards.append(out)
        return out

    def recording_cal_mask(*args):
        out = cal_mask(*args)
        masks.append(out)
        return out

    cam_module.Net.forward = recording_forward
    theirs.cal_mask = recording_cal_mask

    images = seeded_images(seed, (PAIRS, 2, 3, HEIGHT, WIDTH))
    rng = np.random.RandomState(seed + 2)
    rng.standard_normal(images.shape)  # the tags are drawn after the images, from the same stream
    tags = np.zeros((PAIRS, 2, NUM_CLASSES), dtype=np.float32)
    for i in range(PAIRS):
        shared = rng.randint(NUM_CLASSES)
        tags[i, :, shared] = 1
        tags[i, 0, rng.randint(NUM_CLASSES)] = 1
    x, y = torch.from_numpy(images[:, 0]), torch.from_numpy(images[:, 1])
    label, label_ref = torch.from_numpy(tags[:, 0]), torch.from_numpy(tags[:, 1])

    lx, ly, x_cam, y_cam, cam_x, cam_y = theirs(x, y)
    scope = {"x": lx, "y": ly, "x_cam": x_cam, "y_cam": y_cam, "cam_x": cam_x, "cam_y": cam_y,
             "label": label, "label_ref": label_ref, "F": F, "torch": torch}
    exec(loss_lines(root), scope)  # their own loss lines, on their outputs
    cam_module.Net.forward = net_forward
    fg = [torch.max(a, b) for a, b in zip(masks[0], masks[1])]  # their forward's max of the two levels
    _, _, x_mask, y_mask = forwards[0]
    if len(dropout.draws) != len(SCALES) * len(DRAW_ORDER):
        raise SystemExit(f"expected {len(SCALES) * len(DRAW_ORDER)} dropout draws, got {len(dropout.draws)}")

    def pair(a, b):  # (P, ...) anchors and partners -> (P, 2, ...)
        return np.stack([a.detach().numpy(), b.detach().numpy()], axis=1)

    fixture = {
        "seed": np.array(seed), "mid": np.array(mid), "layers": np.array(LAYERS), "width_per_group": np.array(WIDTH_PER_GROUP),
        "scales": np.array(SCALES, dtype=np.float32), "torch_version": np.array(torch.__version__),
        "image_shape": np.array(images.shape), "tags": tags,
        "foreground": pair(*fg),
        "logits": pair(lx, ly),
        "logits_enhanced": pair(x_mask.mean(dim=(2, 3)), y_mask.mean(dim=(2, 3))),
        "cams": pair(F.relu(x_cam), F.relu(y_cam)),
        "cams_enhanced": pair(cam_x, cam_y),
        "loss_lc": np.array([scope["loss1"].item(), scope["loss2"].item()], dtype=np.float32),
        "loss_ls": np.array([scope["loss_x"].item(), scope["loss_y"].item()], dtype=np.float32),
        "loss_total": np.array(scope["loss"].item(), dtype=np.float32),
        "weight_sums": np.array([float(v.double().sum()) for v in state.values() if v.is_floating_point()]),
    }
    for s in range(len(SCALES)):
        for d, (level, position) in enumerate(DRAW_ORDER):
            fixture[f"keep_{s}_{level}_{position}"] = dropout.draws[s * len(DRAW_ORDER) + d].astype(np.uint8)
    return fixture


def rpnet_outputs(fixture: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """rpnet's released reading on the fixture's inputs and draws (the test's computation)."""
    model = build_rpnet(int(fixture["mid"]))
    model.load_state_dict(seeded_state_dict(model, int(fixture["seed"])))
    model.train()
    calls = {"block2": 0, "block4": 0}

    def draw_keep(mask, keep, level):
        s = calls[level]
        calls[level] += 1
        z = np.stack([fixture[f"keep_{s}_{level}_0"], fixture[f"keep_{s}_{level}_1"]], axis=1)  # (P, 2, 1, h, w)
        return torch.from_numpy(z.reshape((-1,) + z.shape[2:]).astype(np.float32))

    model.draw_keep = draw_keep
    inputs = seeded_images(int(fixture["seed"]), tuple(int(n) for n in fixture["image_shape"]))
    images = torch.from_numpy(inputs).flatten(0, 1)  # groups of 2: anchor, partner
    tags = torch.from_numpy(fixture["tags"]).flatten(0, 1)
    out = model(images)
    pairs = inputs.shape[0]
    with torch.no_grad():
        coverage = P.feature_confident_mask(model.block_features(images)["block4"], model.settings.alpha).mean()

    def pair(t):
        return t.detach().reshape((pairs, 2) + t.shape[1:]).numpy()

    terms = [classifier_loss(type(out)(*[None if t is None else t[r::2] for t in out]), tags[r::2],
                             model.classifier.weight, lc_on_original=True, lc_on_enhanced=False) for r in (0, 1)]
    total = classifier_loss(out, tags, model.classifier.weight, lc_on_original=True, lc_on_enhanced=False).total
    return {
        "foreground": pair(out.foreground), "logits": pair(out.logits), "logits_enhanced": pair(out.logits_enhanced),
        "cams": pair(out.cams), "cams_enhanced": pair(out.cams_enhanced),
        "loss_lc": np.array([t.cls.item() for t in terms], dtype=np.float32),
        "loss_ls": np.array([10.0 * t.consistency.item() for t in terms], dtype=np.float32),
        "loss_total": np.array(2.0 * total.item(), dtype=np.float32),  # theirs sums the pair's two terms
        "mask_coverage": coverage.numpy(),
    }


COMPARED = ("foreground", "logits", "logits_enhanced", "cams", "cams_enhanced", "loss_lc", "loss_ls", "loss_total")


CASES = {"wide": 512, "narrow": 2}  # their width (every position passes the 0.3 mask) and a narrow one (about half do)


def split_case(arrays: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    """The arrays of one case of the fixture, without the ``{case}_`` prefix of their names."""
    return {k.removeprefix(f"{case}_"): v for k, v in arrays.items() if k.startswith(f"{case}_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("released", type=Path, help="a work tree of the released RPNet code")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/released_parity.npz"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    arrays, worst = {}, 0.0
    for case, mid in CASES.items():
        fixture = run(args.released.resolve(), args.seed, mid)
        ours = rpnet_outputs(fixture)
        print(f"{case} (block4 reduced to {mid} channels; the confident mask covers "
              f"{float(ours['mask_coverage']):.0%} of the positions)")
        for name in COMPARED:
            diff = float(np.abs(ours[name] - fixture[name]).max())
            worst = max(worst, diff)
            print(f"  {name:16s} max |rpnet - released| = {diff:.3g}   "
                  f"(released max |value| {np.abs(fixture[name]).max():.3g})")
        arrays.update({f"{case}_{k}": v for k, v in fixture.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"fixture written to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB); worst difference {worst:.3g}")


if __name__ == "__main__":
    main()
