"""The built-in synthetic dataset: seeded, fast, and hard in the ways real data is.

``rpnet synth OUT_DIR`` (and ``rpnet demo``, and the tests) use it to get a dataset
that needs no download yet still shows whether a weakly supervised method works.
A dataset where a class is a flat coloured disc is useless for that: any CAM
segments it. This one copies the three things that make PASCAL VOC hard for
methods trained from image-level tags:

1. **Objects have a small distinctive part and a large ambiguous one.** Each object
   is a rounded blob (the *body*, a wobbly ellipse of random size, aspect and
   rotation) with a *head* inside it, near its outline on a random side
   (:data:`HEAD_OFFSET`), as a face sits on an animal. The head covers
   :data:`HEAD_AREA_FRACTION` (18-28 %) of the object and carries a high-contrast,
   class-specific two-colour pattern (:class:`ClassStyle`). The body is a muted
   colour whose hue differs between classes by only :data:`BODY_HUE_STEP`
   degrees, with per-instance jitter, shading and pixel noise, so it says little
   about the class on its own. A classifier therefore finds the head enough and its
   CAM covers the head only, the "partial activation" of real CAMs. The body is
   still consistent within a class (the same hue and a faint texture at a
   class-specific angle, :data:`BODY_TEXTURE_AMPLITUDE`), which is what
   cross-image region mining (RPNet's prototypes) can exploit to recover it. A minority
   of instances (:data:`STRONG_BODY_PROB`) carry the stripes strongly, like the photos
   in which a whole animal is distinctive: the regions a prototype can carry over.
2. **Classes co-occur with their own background.** Each class has a context
   texture (boat-water, plane-sky, car-road ...). An image that holds class c gets
   c's context over a large band of its background with probability
   :data:`CONTEXT_PROB`, so the background is discriminative and CAMs leak onto
   it, as they leak onto water and sky in VOC. A few images (:data:`STRAY_CONTEXT_PROB`)
   show a context without its class, as real water sometimes has no boat. The
   other images get a generic cluttered background: colour gradients, multi-scale
   noise and unlabelled distractor shapes whose colours stay
   :data:`DISTRACTOR_MIN_HEAD_DISTANCE` away from every head colour (a distractor
   must not be a free head).
3. **Scenes are cluttered.** One to three objects and usually one or two classes per
   image, with class frequencies imbalanced (:attr:`ClassStyle.frequency`).
   Objects may be truncated by the image edge and occlude each other; the mask
   records the visible top object, and an object must stay at least
   :data:`MIN_VISIBLE_FRACTION` visible. As in VOC, a thin band of ignore label
   (255, :data:`BORDER_RADIUS` px either side) runs along every object boundary.

Every image is drawn from its own generator, seeded by ``(seed, index)``, so a
dataset is byte-identical for the same arguments, and image ``i`` does not change
when ``n_val`` does. Everything is vectorised numpy; the default 200 + 60 images of
128 px take a few seconds on one core.

:func:`render_sample` draws one sample in memory (image, mask, objects with their
part masks, and the context drawn); :func:`generate` writes a dataset in one of
three layouts that the loaders of ``rpnet.data`` read:

- ``voc``: ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml``,
  ``SegmentationClass/<id>.png``, ``SegmentationPart/<id>.png`` (:func:`part_map`), ``ImageSets/Segmentation/{train,val}.txt``,
  ``classes.txt``;
- ``coco``: ``{train,val}2014/<id>.jpg``, ``annotations/instances_{train,val}2014.json``
  (non-contiguous category ids, polygon or RLE instance masks of visible regions);
- ``folder``: ``images/<id>.png``, ``masks/<id>.png``, ``tags.csv``, ``classes.txt``,
  ``{train,val}.txt``.

Every layout also gets ``synth.json``: the generator's arguments and class list.
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import contourpy  # matplotlib's contour tracer (a dependency of matplotlib >= 3.6)
import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from ..config import from_dict, parse_override, to_dict
from ..errors import ConfigError
from ..io import IGNORE_INDEX, atomic_write_text, save_image, save_mask, write_json

RGB = tuple[float, float, float]  # channel values in [0, 1]

BACKGROUND = "background"
ID_PREFIX = "synth_"
ID_DIGITS = 6
MAX_IMAGES = 10**ID_DIGITS
MIN_SIZE = 32  # below this a head is a pixel or two and its pattern is gone
# What each pixel is (Sample.parts; VOC layout: SegmentationPart/<id>.png): an object's distinctive
# part, the rest of it, background showing the context of a class in the image, other background.
PART_HEAD, PART_BODY, BG_CONTEXT, BG_OTHER = 1, 2, 3, 4
PART_DIR = "SegmentationPart"
SYNTH_STREAM = 0x5E7D  # spawn key: keeps these streams apart from other seeded users of `seed`
JPEG_QUALITY = 95

# --- scene composition --------------------------------------------------------
NUM_CLASSES_PROBS = {1: 0.60, 2: 0.32, 3: 0.08}  # classes per image
NUM_OBJECTS_PROBS = {1: 0.60, 2: 0.30, 3: 0.10}  # objects per image (raised to the class count)
MAX_PLACEMENT_TRIES = 25
MIN_VISIBLE_FRACTION = 0.5  # of an object's in-image area, after later objects cover it
MIN_IN_IMAGE_FRACTION = 0.6  # of an object's nominal area; limits truncation at the edge
MIN_OBJECT_AREA = 0.012  # of the image area
BORDER_RADIUS = 1  # ignore band: this many pixels on each side of a boundary

# --- object geometry ----------------------------------------------------------
# Objects span 4-7 cells of a stride-16 map at 128 px (~34 % of the pixels are objects, ~30 % in VOC):
# the CAM of a 128 px image has 8x8 cells, and a blob one cell wider than a small object is mostly
# background (0.18-0.34 of the side, 21 % object pixels: 46 % of the foreground seeds right; with
# these sizes 53 %, and 65 % with the heads inside the outline too).
BODY_SEMI_MAJOR = (0.26, 0.44)  # of the image side
BODY_ASPECT = (0.45, 0.90)  # minor / major semi-axis
BLOB_HARMONICS = (2, 3, 4)  # angular frequencies of the outline's wobble
BLOB_WOBBLE = 0.07  # amplitude of each harmonic, relative to the radius
CENTRE_RANGE = (0.08, 0.92)  # object centres, as a fraction of the image side
HEAD_AREA_FRACTION = (0.18, 0.28)  # head area / object area
# The head's centre sits this many head radii outside the body outline (negative: inside). A CAM
# blob around the head spills about one 16 px cell beyond it; with the head on the outline (-0.5,
# a fifth of it outside) that spill lies on the background, on the far side of the object's
# boundary, where no boundary-respecting walk can bring it back: even a walk on the ground-truth
# boundaries scored only 39.7 against CAMs of 39.4. With the head half a radius inside the
# outline the spill lands on the body (walk on ground-truth boundaries 65.6, CAMs 51.3).
HEAD_OFFSET = -1.5
# The part of a head disc beyond a (locally flat) body outline: none at HEAD_OFFSET <= -1
# (at -0.5 it was the circular segment beyond a chord at 0.5 r, 19.6 %).
HEAD_OUTSIDE_FRACTION = 0.0
HEAD_ASPECT = (0.8, 1.0)
HEAD_PATTERN_CYCLES = 1.0  # pattern repeats across one head radius (2 blurs away in the stride-4 stem)
HEAD_COLOUR_JITTER = 0.05  # per channel, uniform
PART_SHADING = 0.25  # brightness falls by this much from a part's centre to its rim

# --- body colours: deliberately close between classes ---------------------------
BODY_HUE_START = 22.0  # degrees: an orange brown; the classes step towards olive from here
BODY_HUE_STEP = 12.0  # degrees between neighbouring classes' body hues
BODY_HUE_JITTER = 5.0  # degrees, per instance
BODY_SATURATION = (0.28, 0.42)
BODY_VALUE = (0.45, 0.65)
BODY_TEXTURE_AMPLITUDE = 0.08  # faint class-specific stripes, relative brightness
# Some instances show their body plainly (strong stripes): as in real photos, where a whole
# object is sometimes distinctive, these are the images whose body regions a cross-image
# method can carry over to the many images where only the head stands out.
STRONG_BODY_PROB = 0.35
STRONG_BODY_TEXTURE_AMPLITUDE = 0.30
BODY_TEXTURE_CYCLES = 3.0  # stripes across one semi-major axis
BODY_NOISE = 0.05  # per-pixel brightness noise (std)

# --- backgrounds ----------------------------------------------------------------
CONTEXT_PROB = 0.3  # an image shows the context of one of its classes
STRAY_CONTEXT_PROB = 0.15  # otherwise, the context of a class that is absent
CONTEXT_EXTENT = (0.5, 1.0)  # of the image height, from the context's side
CONTEXT_EDGE_WOBBLE = 0.06  # of the image side: the band's edge is not a straight line
GENERIC_NOISE_AMPLITUDE = 0.25
GENERIC_SATURATION = (0.05, 0.40)
GENERIC_VALUE = (0.30, 0.80)
DISTRACTORS_GENERIC = (2, 6)  # inclusive range, images with a generic background
DISTRACTORS_CONTEXT = (0, 3)  # inclusive range, images with a context band
DISTRACTOR_SIZE = (0.03, 0.13)  # semi-axis, of the image side
DISTRACTOR_MIN_HEAD_DISTANCE = 0.35  # Euclidean RGB distance in [0, 1] units
DISTRACTOR_SHAPES = ("ellipse", "rectangle", "triangle", "bar")

# --- whole-image effects --------------------------------------------------------
BRIGHTNESS_JITTER = 0.10
COLOUR_CAST_JITTER = 0.04
PIXEL_NOISE = 0.02  # std of the final additive noise


@dataclass(frozen=True)
class SynthSpec:
    """The statistics of one dataset design; the defaults are the module constants above.

    ``rpnet synth --profile NAME`` picks one of :data:`PROFILES`, ``--spec KEY=VALUE`` changes
    single fields. Ranges are (low, high) of a uniform draw; probabilities of counts are for
    1, 2, 3 ... in order. The defaults reproduce the built-in dataset byte for byte.
    """

    num_classes: int = 6  # the first N of the class set
    class_set: str = "default"  # key of CLASS_SETS: which classes (heads, textures, contexts) are drawn
    classes_per_image: tuple[float, ...] = tuple(NUM_CLASSES_PROBS.values())
    objects_per_image: tuple[float, ...] = tuple(NUM_OBJECTS_PROBS.values())
    object_size: tuple[float, float] = BODY_SEMI_MAJOR  # body semi-major axis, of the image side
    head_fraction: tuple[float, float] = HEAD_AREA_FRACTION  # head area / object area
    body_hue_step: float = BODY_HUE_STEP  # degrees between neighbouring classes' body hues
    strong_body_prob: float = STRONG_BODY_PROB  # instances whose body texture is plain to see
    context_prob: float = CONTEXT_PROB  # an image shows the context of one of its classes
    stray_context_prob: float = STRAY_CONTEXT_PROB  # otherwise, of an absent class
    context_extent: tuple[float, float] = CONTEXT_EXTENT  # of the image height
    distractors: tuple[int, int] = DISTRACTORS_GENERIC  # unlabelled shapes on a generic background
    distractors_context: tuple[int, int] = DISTRACTORS_CONTEXT  # and on a context background

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ConfigError(f"synthetic spec {name} must be {rule}, got {getattr(self, name)!r}")

        if self.class_set not in CLASS_SETS:
            fail("class_set", f"one of {sorted(CLASS_SETS)}")
        if not 1 <= self.num_classes <= len(CLASS_SETS[self.class_set]):
            fail("num_classes", f"1..{len(CLASS_SETS[self.class_set])} for class set {self.class_set!r}")
        for name in ("classes_per_image", "objects_per_image"):
            probs = getattr(self, name)
            if not probs or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
                fail(name, "a non-empty list of probabilities summing to 1")
        if len(self.classes_per_image) > self.num_classes:
            fail("classes_per_image", f"at most num_classes ({self.num_classes}) long")
        for name, top in (("object_size", 0.5), ("head_fraction", 0.9), ("context_extent", 1.0)):
            low, high = getattr(self, name)
            if not 0 < low <= high <= top:
                fail(name, f"(low, high) with 0 < low <= high <= {top}")
        for name in ("strong_body_prob", "context_prob", "stray_context_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "in [0, 1]")
        if self.body_hue_step < 0:
            fail("body_hue_step", "non-negative")
        for name in ("distractors", "distractors_context"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                fail(name, "(low, high) with 0 <= low <= high")

    @property
    def styles(self) -> tuple[ClassStyle, ...]:
        """The classes drawn, in label order (class index k is label k + 1)."""
        return CLASS_SETS[self.class_set][:self.num_classes]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(style.name for style in self.styles)


@dataclass(frozen=True)
class ClassStyle:
    """How one class looks: a distinctive head, an ambiguous body, a context."""

    name: str
    frequency: float  # relative weight when drawing an image's classes
    head_colours: tuple[RGB, RGB]  # the two colours of the head's pattern
    head_pattern: str  # key of HEAD_PATTERNS
    body_texture_angle: float  # degrees, in the object's own frame
    context: str  # key of CONTEXTS


# Heads: saturated, high-contrast pairs, far apart between classes. Bodies: hues
# BODY_HUE_STEP apart. Frequencies: person and car common, plane rare (as in VOC).
CLASSES: tuple[ClassStyle, ...] = (
    ClassStyle("bird", 0.15, ((0.98, 0.82, 0.08), (0.10, 0.10, 0.10)), "stripes", 0.0, "foliage"),
    ClassStyle("boat", 0.18, ((0.86, 0.12, 0.16), (0.96, 0.96, 0.96)), "rings", 45.0, "water"),
    ClassStyle("car", 0.22, ((0.08, 0.78, 0.92), (0.08, 0.12, 0.43)), "checker", 90.0, "road"),
    ClassStyle("cat", 0.12, ((0.90, 0.16, 0.78), (0.98, 0.98, 0.98)), "dots", 135.0, "carpet"),
    ClassStyle("person", 0.25, ((1.00, 0.60, 0.75), (0.35, 0.00, 0.55)), "diagonal", 20.0, "grass"),
    ClassStyle("plane", 0.08, ((1.00, 0.47, 0.00), (0.98, 0.98, 0.98)), "halves", 160.0, "sky"),
)
CLASS_NAMES: tuple[str, ...] = tuple(style.name for style in CLASSES)
# Other classes, none of the default set's, for pretraining a backbone (`rpnet pretrain`) the way
# ImageNet's classes are not VOC's: head colour pairs away from the default heads, every pattern
# twice with different colours, each context shared by two classes.
PRETRAIN_CLASSES: tuple[ClassStyle, ...] = (
    ClassStyle("bicycle", 0.09, ((0.20, 0.35, 0.95), (1.00, 0.92, 0.45)), "stripes", 70.0, "road"),
    ClassStyle("bottle", 0.07, ((0.10, 0.62, 0.25), (0.98, 0.98, 0.98)), "rings", 10.0, "water"),
    ClassStyle("bus", 0.08, ((0.50, 0.25, 0.05), (0.95, 0.95, 0.60)), "checker", 120.0, "road"),
    ClassStyle("chair", 0.10, ((0.60, 0.08, 0.10), (0.10, 0.60, 0.60)), "dots", 30.0, "carpet"),
    ClassStyle("cow", 0.08, ((0.05, 0.05, 0.05), (0.98, 0.98, 0.98)), "halves", 100.0, "grass"),
    ClassStyle("dog", 0.11, ((0.70, 0.40, 0.95), (0.15, 0.30, 0.10)), "diagonal", 150.0, "carpet"),
    ClassStyle("horse", 0.07, ((0.98, 0.30, 0.30), (0.10, 0.20, 0.80)), "stripes", 55.0, "grass"),
    ClassStyle("motorbike", 0.08, ((0.40, 0.95, 0.40), (0.35, 0.05, 0.35)), "checker", 5.0, "water"),
    ClassStyle("plant", 0.09, ((0.20, 0.20, 0.60), (0.85, 0.95, 0.20)), "dots", 80.0, "foliage"),
    ClassStyle("sheep", 0.07, ((0.92, 0.92, 0.78), (0.45, 0.28, 0.18)), "rings", 170.0, "sky"),
    ClassStyle("sofa", 0.08, ((0.00, 0.45, 0.45), (0.95, 0.75, 0.55)), "halves", 140.0, "foliage"),
    ClassStyle("train", 0.08, ((0.80, 0.80, 0.80), (0.80, 0.05, 0.25)), "diagonal", 65.0, "sky"),
)
CLASS_SETS: dict[str, tuple[ClassStyle, ...]] = {"default": CLASSES, "pretrain": PRETRAIN_CLASSES}
# COCO's category ids have gaps (1..90 for 80 classes); ours do too, so that a loader
# that confuses ids with indices fails on this dataset rather than on real COCO.
COCO_CATEGORY_IDS: tuple[int, ...] = (1, 2, 3, 5, 7, 11, 13, 14, 17, 18, 20, 22)
POLYGON_MIN_IOU = 0.9  # below this round-trip IoU an instance is stored as RLE instead

DEFAULT_SPEC = SynthSpec()
# Dataset designs of the generalisation suite (benchmarks/generalisation.py, docs/experiments.md): each moves
# the statistics that decide where a CAM's best background threshold lies (object and part size, the
# context cue, clutter, crowding) away from the default design.
PROFILES: dict[str, SynthSpec] = {
    "default": DEFAULT_SPEC,
    # Big objects whose distinctive part is small: a CAM covers a small share of each object.
    "large-objects": SynthSpec(object_size=(0.36, 0.50), head_fraction=(0.08, 0.14)),
    # Small objects on backgrounds that usually show their class's context: CAMs spill over them.
    "small-context": SynthSpec(object_size=(0.14, 0.24), head_fraction=(0.25, 0.40), context_prob=0.8,
                               context_extent=(0.6, 1.0)),
    # Bodies that differ between classes and show their texture: the whole object is evidence.
    "distinct-bodies": SynthSpec(body_hue_step=45.0, strong_body_prob=0.9),
    # Many objects and classes per image among heavy clutter.
    "crowded": SynthSpec(classes_per_image=(0.2, 0.45, 0.35), objects_per_image=(0.1, 0.3, 0.3, 0.3),
                         object_size=(0.18, 0.32), distractors=(5, 10), distractors_context=(3, 6)),
    # Three classes, each nearly always on its own context.
    "few-classes": SynthSpec(num_classes=3, classes_per_image=(0.85, 0.15), context_prob=0.6,
                             stray_context_prob=0.3),
    # The twelve other classes `rpnet pretrain` trains a backbone on (the default design otherwise).
    "pretrain": SynthSpec(class_set="pretrain", num_classes=len(PRETRAIN_CLASSES)),
}
# The designs of the generalisation suite: every profile of the built-in classes.
SUITE_PROFILES: tuple[str, ...] = tuple(name for name, spec in PROFILES.items() if spec.class_set == "default")


@dataclass(frozen=True)
class SynthObject:
    """One object instance of a rendered sample. Masks are (H, W) bool.

    ``head`` and ``body`` are the object's whole parts as drawn (the body without
    the head, before later objects cover either); ``visible`` is where the object
    is the top object, i.e. its pixels in the mask. ``bbox`` is (xmin, ymin, xmax,
    ymax) of ``visible``, 0-based and inclusive.
    """

    class_index: int
    name: str
    head: np.ndarray
    body: np.ndarray
    visible: np.ndarray
    bbox: tuple[int, int, int, int]

    @property
    def truncated(self) -> bool:
        """Whether the visible region touches the image edge (VOC's ``truncated``)."""
        h, w = self.visible.shape
        x0, y0, x1, y1 = self.bbox
        return x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1


class Sample(NamedTuple):
    """One rendered image and its labels.

    image: (H, W, 3) uint8 RGB. mask: (H, W) uint8, 0 background, ``k + 1`` for
    class index k, 255 the ignore band along object boundaries. objects: the
    visible object instances, bottom to top. context: the class index whose context
    texture fills part of the background, or None for a generic background. parts: what each
    pixel is (:func:`part_map`), for measuring which pixels a CAM finds and which it spills onto.
    """

    image: np.ndarray
    mask: np.ndarray
    objects: list[SynthObject]
    context: int | None
    parts: np.ndarray  # (H, W) uint8: PART_HEAD, PART_BODY, BG_CONTEXT, BG_OTHER or 255 (ignore band)


# --- small vectorised helpers -----------------------------------------------------

def _smooth_noise(rng: np.random.Generator, size: int, cells_y: int, cells_x: int) -> np.ndarray:
    """(size, size) float noise in [0, 1]: a random grid of cells, smoothly interpolated."""
    grid = rng.random((cells_y + 1, cells_x + 1))

    def axis(cells: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.linspace(0.0, cells, size)
        i0 = np.minimum(pos.astype(np.int64), cells - 1)
        t = pos - i0
        return i0, t * t * (3.0 - 2.0 * t)  # smoothstep hides the grid's seams

    y0, ty = axis(cells_y)
    x0, tx = axis(cells_x)
    top = grid[y0][:, x0] * (1 - tx) + grid[y0][:, x0 + 1] * tx
    bottom = grid[y0 + 1][:, x0] * (1 - tx) + grid[y0 + 1][:, x0 + 1] * tx
    return top * (1 - ty[:, None]) + bottom * ty[:, None]


def _fractal_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) noise in about [-0.5, 0.5] with structure at three scales."""
    return (0.5 * _smooth_noise(rng, size, 3, 3) + 0.3 * _smooth_noise(rng, size, 7, 7)
            + 0.2 * _smooth_noise(rng, size, 15, 15)) - 0.5


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (size, size) float."""
    coords = np.arange(size, dtype=np.float64)
    return np.meshgrid(coords, coords, indexing="ij")


def _frame(y: np.ndarray, x: np.ndarray, cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) in a frame centred at (cy, cx) whose u axis points along ``angle``."""
    dy, dx = y - cy, x - cx
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


# --- heads: a class-specific two-colour pattern in the head's own frame ----------------
# Each takes normalised head coordinates (u along the outward normal, v across;
# radius 1) and returns True where the first colour goes.
HEAD_PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "stripes": lambda u, v: np.sin(np.pi * HEAD_PATTERN_CYCLES * u) > 0,
    "rings": lambda u, v: np.sin(np.pi * HEAD_PATTERN_CYCLES * np.hypot(u, v) + 0.5 * np.pi) > 0,
    "checker": lambda u, v: (np.floor(HEAD_PATTERN_CYCLES * u) + np.floor(HEAD_PATTERN_CYCLES * v)) % 2 == 0,
    "dots": lambda u, v: np.hypot(np.mod(HEAD_PATTERN_CYCLES * u, 1) - 0.5,
                                  np.mod(HEAD_PATTERN_CYCLES * v, 1) - 0.5) > 0.3,
    "diagonal": lambda u, v: np.sin(np.pi * HEAD_PATTERN_CYCLES * (u + v)) > 0,
    "halves": lambda u, v: u > 0,
}


# --- context textures: (rng, size) -> (size, size, 3) float RGB ----------------------
# The literals inside each are that texture's look (base colour, contrast, scale).

def _sky(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blue at the top fading to pale, with soft white clouds."""
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    img = np.array([0.35, 0.55, 0.90]) + t * np.array([0.43, 0.33, 0.08]) + np.zeros((1, size, 1))
    cloud = np.clip((_smooth_noise(rng, size, 3, 5) - 0.55) * 3.0, 0.0, 1.0)[..., None]
    return img * (1 - cloud) + 0.97 * cloud


def _water(rng: np.random.Generator, size: int) -> np.ndarray:
    """Deep blue with wavy horizontal ripples."""
    y, _ = _grid(size)
    period = size / rng.uniform(8.0, 12.0)
    phase = 2 * np.pi * (y / period + 1.5 * _smooth_noise(rng, size, 2, 6))
    waves = 0.5 + 0.5 * np.sin(phase)
    return np.array([0.04, 0.24, 0.50]) + waves[..., None] * np.array([0.10, 0.16, 0.18])


def _road(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grainy grey asphalt with a dashed lane marking."""
    img = 0.33 + 0.05 * rng.standard_normal((size, size)) + 0.10 * _fractal_noise(rng, size)
    y, x = _grid(size)
    lane_row = rng.uniform(0.65, 0.85) * size
    dash_period = size / 5.0
    on_row = np.abs(y - lane_row) < max(1.0, size / 64.0)  # a line ~2 px thick at 128 px
    on_dash = np.mod(x + rng.uniform(0, dash_period), dash_period) < dash_period / 2
    lane = on_row & on_dash
    img = np.repeat(img[..., None], 3, axis=2) * np.array([1.0, 1.0, 1.05])
    img[lane] = (0.92, 0.90, 0.78)
    return img


def _grass(rng: np.random.Generator, size: int) -> np.ndarray:
    """Yellow-green with vertical streaks."""
    streaks = _smooth_noise(rng, size, 3, max(4, size // 2)) - 0.5  # thin in x, long in y
    return np.array([0.30, 0.55, 0.15]) * (1.0 + 0.6 * streaks[..., None] + 0.3 * _fractal_noise(rng, size)[..., None])


def _carpet(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wine red with a faint diamond pattern."""
    y, x = _grid(size)
    period = size / rng.uniform(6.0, 9.0)
    diamonds = (np.floor((x + y) / period) + np.floor((x - y) / period)) % 2
    img = np.array([0.45, 0.15, 0.25]) * (1.0 + 0.18 * diamonds[..., None])
    return img + 0.03 * rng.standard_normal((size, size, 1))


def _foliage(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dark green leafy blotches."""
    blotches = _smooth_noise(rng, size, 9, 9) + 0.6 * _smooth_noise(rng, size, 17, 17)
    return np.array([0.13, 0.34, 0.12]) * (0.55 + 0.6 * blotches[..., None])


CONTEXTS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "sky": _sky, "water": _water, "road": _road, "grass": _grass, "carpet": _carpet, "foliage": _foliage,
}
CONTEXT_FROM_TOP = frozenset({"sky", "foliage"})  # the rest rise from the bottom edge


def _context_band(rng: np.random.Generator, size: int, context: str,
                  extent_range: tuple[float, float] = CONTEXT_EXTENT) -> np.ndarray:
    """(size, size) bool: a band from the context's side covering ``extent_range`` of the height."""
    y, _ = _grid(size)
    extent = rng.uniform(*extent_range) * size
    edge = extent + CONTEXT_EDGE_WOBBLE * size * (2 * _smooth_noise(rng, size, 1, 3)[0] - 1)
    return y < edge[None, :] if context in CONTEXT_FROM_TOP else y >= size - edge[None, :]


# --- backgrounds and distractors -----------------------------------------------------

def _generic_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3): a gradient between two muted colours plus multi-scale noise."""
    colours = [_hsv(rng.uniform(0, 360), rng.uniform(*GENERIC_SATURATION), rng.uniform(*GENERIC_VALUE))
               for _ in range(2)]
    y, x = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(angle) + y * np.sin(angle)) / size
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
    img = colours[0] + ramp[..., None] * (colours[1] - colours[0])
    return img + GENERIC_NOISE_AMPLITUDE * _fractal_noise(rng, size)[..., None]


# Per class set, every head colour of the set (all its classes, however many a design draws).
HEAD_COLOURS: dict[str, np.ndarray] = {
    name: np.array([c for style in styles for c in style.head_colours]) for name, styles in CLASS_SETS.items()}


def _distractor_colour(rng: np.random.Generator, head_colours: np.ndarray) -> np.ndarray:
    """A random colour at least DISTRACTOR_MIN_HEAD_DISTANCE from every row of ``head_colours`` (N, 3)."""
    while True:  # most draws pass; the rejected region is a few small balls in the RGB cube
        colour = rng.uniform(0.05, 0.95, size=3)
        if np.linalg.norm(head_colours - colour, axis=1).min() >= DISTRACTOR_MIN_HEAD_DISTANCE:
            return colour


def _draw_distractors(rng: np.random.Generator, img: np.ndarray, count: int, head_colours: np.ndarray) -> None:
    """Paint ``count`` unlabelled flat shapes onto ``img`` (size, size, 3) in place, in colours away
    from ``head_colours`` (N, 3)."""
    size = img.shape[0]
    y, x = _grid(size)
    for _ in range(count):
        shape = DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))]
        a = rng.uniform(*DISTRACTOR_SIZE) * size
        b = a * rng.uniform(0.3, 1.0)
        u, v = _frame(y, x, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0, np.pi))
        if shape == "ellipse":
            inside = (u / a) ** 2 + (v / b) ** 2 < 1
        elif shape == "rectangle":
            inside = (np.abs(u) < a) & (np.abs(v) < b)
        elif shape == "triangle":
            inside = (v > -b) & (np.abs(u) < a * (b - v) / (2 * b))
        else:  # a thin bar, like a pole or a table edge
            inside = (np.abs(u) < 2 * a) & (np.abs(v) < max(1.0, 0.12 * b))
        shade = 1.0 - 0.15 * np.clip(u / (2 * a), -1, 1)
        img[inside] = (_distractor_colour(rng, head_colours) * shade[..., None])[inside]


# --- objects ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Geometry:
    head: np.ndarray  # (H, W) bool
    body: np.ndarray  # (H, W) bool, without the head
    colour: np.ndarray  # (H, W, 3) float, valid on head | body
    nominal_area: float  # area of head | body if nothing were cut by the image edge


def _place_object(rng: np.random.Generator, size: int, cls: int, spec: SynthSpec) -> _Geometry:
    """Draw one object of class index ``cls`` (its shape and colours) at a random pose."""
    style = spec.styles[cls]
    y, x = _grid(size)
    a = rng.uniform(*spec.object_size) * size
    b = a * rng.uniform(*BODY_ASPECT)
    cy, cx = rng.uniform(*CENTRE_RANGE, size=2) * size
    angle = rng.uniform(0, 2 * np.pi)
    amps = rng.uniform(-BLOB_WOBBLE, BLOB_WOBBLE, size=len(BLOB_HARMONICS))
    phases = rng.uniform(0, 2 * np.pi, size=len(BLOB_HARMONICS))

    def outline(phi: np.ndarray | float) -> np.ndarray:
        """Radius of the wobbly outline in normalised body coordinates, at polar angle phi."""
        return 1.0 + sum(am * np.cos(k * np.asarray(phi) + ph) for k, am, ph in zip(BLOB_HARMONICS, amps, phases))

    u, v = _frame(y, x, cy, cx, angle)
    un, vn = u / a, v / b
    rho = np.hypot(un, vn)
    body = rho < outline(np.arctan2(vn, un))

    # The head sits on the outline at a random side, moved along the normal by HEAD_OFFSET radii.
    fraction = rng.uniform(*spec.head_fraction)
    body_area = np.pi * a * b
    head_area = fraction * body_area / (1.0 - HEAD_OUTSIDE_FRACTION * fraction)
    r = np.sqrt(head_area / np.pi)
    t = rng.uniform(0, 2 * np.pi)
    edge = outline(t) * np.array([a * np.cos(t), b * np.sin(t)])
    normal = np.array([np.cos(t) / a, np.sin(t) / b])
    normal /= np.linalg.norm(normal)
    hu, hv = edge + HEAD_OFFSET * r * normal
    c, s = np.cos(angle), np.sin(angle)
    hx, hy = cx + hu * c - hv * s, cy + hu * s + hv * c
    head_angle = angle + np.arctan2(normal[1], normal[0])
    head_aspect = rng.uniform(*HEAD_ASPECT)
    pu, pv = _frame(y, x, hy, hx, head_angle)
    pu, pv = pu / r, pv / (r * head_aspect)
    head = np.hypot(pu, pv) < 1
    body &= ~head

    # Body: a muted hue close to the other classes', shading, a faint class texture, noise.
    hue = BODY_HUE_START + cls * spec.body_hue_step + rng.uniform(-BODY_HUE_JITTER, BODY_HUE_JITTER)
    base = _hsv(hue, rng.uniform(*BODY_SATURATION), rng.uniform(*BODY_VALUE))
    tex_angle = np.deg2rad(style.body_texture_angle)
    stripes = np.sin(2 * np.pi * BODY_TEXTURE_CYCLES * (un * np.cos(tex_angle) + vn * np.sin(tex_angle) * b / a))
    amplitude = STRONG_BODY_TEXTURE_AMPLITUDE if rng.random() < spec.strong_body_prob else BODY_TEXTURE_AMPLITUDE
    brightness = (1.0 - PART_SHADING * np.minimum(rho, 1.0) ** 2 + amplitude * stripes
                  + BODY_NOISE * rng.standard_normal((size, size)))
    colour = base * brightness[..., None]

    # Head: the class's two colours in its pattern, jittered, lightly shaded.
    first, second = (np.clip(np.array(col) + rng.uniform(-HEAD_COLOUR_JITTER, HEAD_COLOUR_JITTER, 3), 0, 1)
                     for col in style.head_colours)
    pattern = HEAD_PATTERNS[style.head_pattern](pu, pv)
    head_colour = np.where(pattern[..., None], first, second)
    head_colour = head_colour * (1.0 - 0.5 * PART_SHADING * np.minimum(np.hypot(pu, pv), 1.0) ** 2)[..., None]
    colour = np.where(head[..., None], head_colour, colour)

    nominal = body_area + HEAD_OUTSIDE_FRACTION * np.pi * r * r * head_aspect
    return _Geometry(head=head, body=body, colour=colour, nominal_area=nominal)


def _choose(rng: np.random.Generator, probs: tuple[float, ...]) -> int:
    """A count 1, 2, ... drawn with probabilities ``probs`` (of 1, 2, ... in order)."""
    return 1 + int(rng.choice(len(probs), p=np.array(probs)))


def _layout(rng: np.random.Generator, size: int, spec: SynthSpec) -> tuple[list[int], list[_Geometry], np.ndarray]:
    """Place the objects: their classes, shapes and the (H, W) int map of the top object.

    The map holds 0 for background and ``j + 1`` where object j is on top. An object
    that cannot be placed without hiding too much of an earlier one (or being mostly
    outside the image) after MAX_PLACEMENT_TRIES is dropped.
    """
    frequencies = np.array([style.frequency for style in spec.styles])
    n_classes = _choose(rng, spec.classes_per_image)
    drawn = rng.choice(spec.num_classes, size=n_classes, replace=False, p=frequencies / frequencies.sum())
    classes = [int(k) for k in drawn]
    n_objects = max(n_classes, _choose(rng, spec.objects_per_image))
    planned = classes + [classes[int(rng.integers(n_classes))] for _ in range(n_objects - n_classes)]

    top = np.zeros((size, size), dtype=np.int64)
    placed: list[int] = []
    shapes: list[_Geometry] = []
    areas: list[int] = []
    min_area = MIN_OBJECT_AREA * size * size
    for cls in planned:
        for _ in range(MAX_PLACEMENT_TRIES):
            geom = _place_object(rng, size, cls, spec)
            shape = geom.head | geom.body
            area = int(shape.sum())
            if area < min_area or area < MIN_IN_IMAGE_FRACTION * geom.nominal_area:
                continue
            candidate = np.where(shape, len(placed) + 1, top)
            visible = np.bincount(candidate.ravel(), minlength=len(placed) + 2)[1:len(placed) + 1]
            if np.all(visible >= MIN_VISIBLE_FRACTION * np.array(areas, dtype=np.float64)):
                top = candidate
                placed.append(cls)
                shapes.append(geom)
                areas.append(area)
                break
    return placed, shapes, top


def _ignore_band(top: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels within BORDER_RADIUS of a change of top object (both sides)."""
    width = 2 * BORDER_RADIUS + 1
    highest = ndimage.maximum_filter(top, size=width, mode="nearest")
    return highest != ndimage.minimum_filter(top, size=width, mode="nearest")


def render_sample(rng: np.random.Generator, size: int, spec: SynthSpec = DEFAULT_SPEC) -> Sample:
    """Draw one synthetic image, its mask and its objects.

    Args:
        rng: the generator every random choice is drawn from (the same state gives
            the same sample).
        size: image side in pixels (>= MIN_SIZE).
        spec: the dataset design (object and part sizes, context, clutter, classes).

    Returns:
        :class:`Sample`: image (size, size, 3) uint8, mask (size, size) uint8 with
        labels 0, ``k + 1`` for class index k and 255, the visible objects (each with
        its head and body part masks), and the context class drawn (or None).
    """
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    placed, shapes, top = _layout(rng, size, spec)

    # Background: the context of one of the image's classes, or of a stray class, or none.
    context: int | None = None
    band = np.zeros((size, size), dtype=bool)
    if placed and rng.random() < spec.context_prob:
        present = sorted(set(placed))
        context = present[int(rng.integers(len(present)))]
    elif rng.random() < spec.stray_context_prob:
        absent = [k for k in range(spec.num_classes) if k not in placed]
        context = absent[int(rng.integers(len(absent)))] if absent else None
    img = _generic_background(rng, size)
    head_colours = HEAD_COLOURS[spec.class_set]
    if context is None:
        _draw_distractors(rng, img, int(rng.integers(spec.distractors[0], spec.distractors[1] + 1)), head_colours)
    else:
        name = spec.styles[context].context
        band = _context_band(rng, size, name, spec.context_extent)
        img = np.where(band[..., None], CONTEXTS[name](rng, size), img)
        _draw_distractors(rng, img, int(rng.integers(spec.distractors_context[0], spec.distractors_context[1] + 1)),
                          head_colours)

    for j, geom in enumerate(shapes):
        img = np.where((top == j + 1)[..., None], geom.colour, img)

    cast = 1.0 + rng.uniform(-COLOUR_CAST_JITTER, COLOUR_CAST_JITTER, 3)
    img = img * rng.uniform(1 - BRIGHTNESS_JITTER, 1 + BRIGHTNESS_JITTER) * cast
    img = img + PIXEL_NOISE * rng.standard_normal(img.shape)
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    labels = np.array([0] + [cls + 1 for cls in placed], dtype=np.uint8)
    mask = labels[top]
    ignore = _ignore_band(top)
    mask[ignore] = IGNORE_INDEX

    objects = []
    for j, (cls, geom) in enumerate(zip(placed, shapes)):
        visible = top == j + 1
        if not (visible & ~ignore).any():
            continue  # all of it is ignore band: no label says it is there, so no tag either
        rows, cols = np.nonzero(visible)
        objects.append(SynthObject(
            class_index=cls, name=spec.styles[cls].name, head=geom.head, body=geom.body, visible=visible,
            bbox=(int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())),
        ))
    co_occurring = band if context is not None and context in placed else np.zeros_like(band)
    return Sample(image=image, mask=mask, objects=objects, context=context,
                  parts=part_map(mask, [o.head & o.visible for o in objects], co_occurring))


def part_map(mask: np.ndarray, heads: Sequence[np.ndarray], context: np.ndarray) -> np.ndarray:
    """(H, W) uint8: PART_HEAD where an object shows its distinctive part, PART_BODY on the rest of
    each object, BG_CONTEXT on background that shows the context of a class in the image (the
    co-occurring background a CAM spills onto), BG_OTHER on the rest of the background, 255 where
    ``mask`` is ignore. ``mask`` (H, W) labels; ``heads``: (H, W) bool per object; ``context`` (H, W) bool."""
    parts = np.where(mask == 0, np.where(context, BG_CONTEXT, BG_OTHER), PART_BODY).astype(np.uint8)
    for head in heads:
        parts[head & (mask != 0)] = PART_HEAD
    parts[mask == IGNORE_INDEX] = IGNORE_INDEX
    return parts


def sample_id(index: int) -> str:
    """The file stem of image ``index``: ``synth_000123``."""
    return f"{ID_PREFIX}{index:0{ID_DIGITS}d}"


def render_indexed(seed: int, index: int, size: int, spec: SynthSpec = DEFAULT_SPEC) -> Sample:
    """The sample that :func:`generate` writes as ``sample_id(index)`` for this seed and design."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SYNTH_STREAM, index)))
    return render_sample(rng, size, spec)


# --- layouts on disk ----------------------------------------------------------------

def _voc_xml(stem: str, sample: Sample) -> str:
    h, w = sample.mask.shape
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    size_el = ET.SubElement(root, "size")
    for tag, value in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for obj in sample.objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = obj.name
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(int(obj.truncated))
        ET.SubElement(el, "difficult").text = "0"
        box = ET.SubElement(el, "bndbox")
        # VOC boxes are 1-based and inclusive.
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.bbox):
            ET.SubElement(box, tag).text = str(value + 1)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _lines(items: list[str]) -> str:
    return "".join(f"{item}\n" for item in items)


def _class_list(spec: SynthSpec) -> list[str]:
    return [BACKGROUND, *spec.class_names]


def _write_voc(out: Path, splits: dict[str, list[int]], seed: int, size: int, spec: SynthSpec) -> None:
    for split, indices in splits.items():
        for index in indices:
            stem, sample = sample_id(index), render_indexed(seed, index, size, spec)
            save_image(out / "JPEGImages" / f"{stem}.jpg", sample.image, quality=JPEG_QUALITY)
            atomic_write_text(out / "Annotations" / f"{stem}.xml", _voc_xml(stem, sample))
            save_mask(out / "SegmentationClass" / f"{stem}.png", sample.mask)
            save_mask(out / PART_DIR / f"{stem}.png", sample.parts)
        atomic_write_text(out / "ImageSets" / "Segmentation" / f"{split}.txt", _lines([sample_id(i) for i in indices]))
    atomic_write_text(out / "classes.txt", _lines(_class_list(spec)))


def _polygons(visible: np.ndarray) -> list[list[float]]:
    """Outlines of an (H, W) bool region as COCO polygons [x1, y1, x2, y2, ...].

    Traced at level 0.5 between pixel centres; COCO puts pixel (r, c)'s centre at
    (c + 0.5, r + 0.5), hence the half-pixel shift.
    """
    padded = np.pad(visible.astype(np.float64), 1)  # closes outlines that touch the edge
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(0.5)
    polygons = []
    for line in lines:
        points = line[:-1] if np.array_equal(line[0], line[-1]) else line
        if len(points) >= 3:
            polygons.append([round(float(c), 2) for c in (points - 0.5).ravel()])
    return polygons


def _coco_segmentation(visible: np.ndarray) -> dict | list:
    """Polygons when they reproduce ``visible`` (IoU >= POLYGON_MIN_IOU, no holes), else RLE."""
    h, w = visible.shape
    polygons = _polygons(visible)
    has_holes = bool((ndimage.binary_fill_holes(visible) & ~visible).any())
    if polygons and not has_holes:
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)
        iou = (decoded & visible).sum() / max((decoded | visible).sum(), 1)
        if iou >= POLYGON_MIN_IOU:
            return polygons
    rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    return {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")}


def _write_coco(out: Path, splits: dict[str, list[int]], seed: int, size: int, spec: SynthSpec) -> None:
    categories = [{"id": cid, "name": name, "supercategory": "synthetic"}
                  for cid, name in zip(COCO_CATEGORY_IDS, spec.class_names)]
    ann_id = 1
    for split, indices in splits.items():
        images, annotations = [], []
        folder = f"{split}2014"
        for index in indices:
            stem, sample = sample_id(index), render_indexed(seed, index, size, spec)
            save_image(out / folder / f"{stem}.jpg", sample.image, quality=JPEG_QUALITY)
            image_id = index + 1  # COCO's image ids start at 1; some tools treat 0 as "none"
            images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": size, "width": size})
            for obj in sample.objects:
                x0, y0, x1, y1 = obj.bbox
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": COCO_CATEGORY_IDS[obj.class_index],
                    "segmentation": _coco_segmentation(obj.visible),
                    "area": float(obj.visible.sum()),
                    "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
                    "iscrowd": 0,
                })
                ann_id += 1
        write_json(out / "annotations" / f"instances_{folder}.json", {
            "info": {"description": "rpnet synthetic dataset", "version": "1"},
            "licenses": [], "images": images, "annotations": annotations, "categories": categories,
        })


def _write_folder(out: Path, splits: dict[str, list[int]], seed: int, size: int, spec: SynthSpec) -> None:
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["image", "tags"])
    for split, indices in splits.items():
        for index in indices:
            stem, sample = sample_id(index), render_indexed(seed, index, size, spec)
            save_image(out / "images" / f"{stem}.png", sample.image)
            save_mask(out / "masks" / f"{stem}.png", sample.mask)
            writer.writerow([f"{stem}.png", " ".join(sorted({obj.name for obj in sample.objects}))])
        atomic_write_text(out / f"{split}.txt", _lines([f"{sample_id(i)}.png" for i in indices]))
    atomic_write_text(out / "tags.csv", rows.getvalue())
    atomic_write_text(out / "classes.txt", _lines(_class_list(spec)))


def spec_from_overrides(profile: str = "default", overrides: Sequence[str] = ()) -> SynthSpec:
    """The design named ``profile`` with ``KEY=VALUE`` changes (values parsed as YAML, as ``--set``)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown synthetic profile {profile!r}; choose from {sorted(PROFILES)}")
    raw = to_dict(PROFILES[profile])
    for item in overrides:
        key, value = parse_override(item)
        raw[key] = value
    return from_dict(SynthSpec, raw, prefix="spec.")


WRITERS: dict[str, Callable[[Path, dict[str, list[int]], int, int, SynthSpec], None]] = {
    "voc": _write_voc, "coco": _write_coco, "folder": _write_folder,
}


def generate(out_dir: str | Path, *, n_train: int = 200, n_val: int = 60, size: int = 128,
             seed: int = 0, fmt: str = "voc", spec: SynthSpec = DEFAULT_SPEC) -> Path:
    """Write a synthetic dataset of ``n_train + n_val`` images into ``out_dir``; return it.

    Image ids are ``synth_000000`` upwards: train first, then val (disjoint). Image
    ``i`` depends only on (seed, i, size), so the same arguments give byte-identical
    files. ``fmt`` picks the layout (see the module docstring) and ``spec`` the design
    (:data:`PROFILES`); ``out_dir/synth.json`` records the arguments, the design and the class list.
    ``out_dir`` must be empty or missing, or hold a dataset this function wrote with the same arguments
    (written again, byte for byte; files added to it stay): anything else is the user's, and is refused
    rather than overwritten or mixed with generated images.

    Raises :class:`~rpnet.errors.ConfigError` naming the bad argument or what is in the way.
    """
    if fmt not in WRITERS:
        raise ConfigError(f"unknown synthetic dataset format {fmt!r}; choose from {sorted(WRITERS)}")
    if n_train < 1 or n_val < 0:
        raise ConfigError(f"n_train must be >= 1 and n_val >= 0, got n_train={n_train}, n_val={n_val}")
    if n_train + n_val > MAX_IMAGES:
        raise ConfigError(f"n_train + n_val must be at most {MAX_IMAGES}, got {n_train + n_val}")
    if size < MIN_SIZE:
        raise ConfigError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a folder")
    record = {
        "generator": "rpnet.data.synthetic", "format": fmt, "n_train": n_train, "n_val": n_val,
        "size": size, "seed": seed, "classes": _class_list(spec),
        "contexts": {style.name: style.context for style in spec.styles},
        "spec": to_dict(spec),
    }
    _check_destination(out, record)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": list(range(n_train)), "val": list(range(n_train, n_train + n_val))}
    WRITERS[fmt](out, splits, seed, size, spec)
    write_json(out / "synth.json", record)
    return out


def _check_destination(out: Path, record: dict) -> None:
    """A ConfigError unless ``out`` is missing, empty, or the same synthetic dataset (its synth.json)."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = out / "synth.json"
    try:
        previous = json.loads(marker.read_text()) if marker.is_file() else None
    except (OSError, ValueError):
        previous = None
    if previous is None:
        found = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise ConfigError(f"{out} is not empty ({found}) and is no dataset `rpnet synth` wrote: generated files would "
                          "replace or mix with yours; choose a new or empty folder")
    if previous != json.loads(json.dumps(record)):
        changed = sorted(k for k in record if previous.get(k) != json.loads(json.dumps(record[k])))
        raise ConfigError(f"{out} holds a synthetic dataset made with other settings ({', '.join(changed)}): writing "
                          "this one over it would mix the two; choose a new or empty folder")


__all__ = [
    "CLASSES", "CLASS_NAMES", "CLASS_SETS", "COCO_CATEGORY_IDS", "DEFAULT_SPEC", "PRETRAIN_CLASSES", "PROFILES",
    "SUITE_PROFILES", "ClassStyle", "Sample", "SynthObject",
    "SynthSpec", "spec_from_overrides",
    "generate", "render_indexed", "render_sample", "sample_id",
]
