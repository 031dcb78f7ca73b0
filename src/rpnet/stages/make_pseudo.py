"""Stage 6: pseudo masks by a random walk on IRN's boundary map (docs/method.md stage 6, IRN's make_sem_seg_labels).

For each image, the trained IRNet gives a class-boundary map at stride 4 (the image and its
mirror image averaged), and the stride-4 CAMs of stage 2 are walked within the regions the
boundaries enclose (:func:`rpnet.ops.random_walk.walk_cams`). Once every image is walked, the
constant background score of the argmax (``pseudo.bg_threshold``) is calibrated without ground
truth (docs/calibration.md) for ``auto``: the lower edge of a three-class Otsu split of the
walked scores of the whole split, as eval-cam and make-ir-label calibrate the CAMs'. It is
written to ``WORK_DIR/make_pseudo/calibration.json``.

The masks come from the walk, or from the CAMs themselves (``pseudo.source``). With a calibration
split (``data.calibration_split``) ``auto`` scores every candidate background score of the walk and
every candidate CAM threshold on its masks and writes the labels of the best (:func:`choose_labels`),
and ``pseudo_miou_estimate`` (``_low``, ``_high``) estimates from those masks what the written masks
score on the other images; without one, ``auto`` is the walk.

Writes ``WORK_DIR/make_pseudo/masks/<id>.png`` (VOC palette: 0 background, k + 1 class k),
``review.csv`` (every tag of every image with the share of the image its pseudo mask gives the tag,
smallest first, empty and tiny ones flagged: the images to look at first, :func:`review_rows`),
``walks/<id>.npz`` (``keys`` (K,), ``walked`` (K, h, w) at stride 4, ``size`` (H, W)) and, for
eval-pseudo's pictures, ``boundaries/<id>.png`` (the boundary probabilities at stride 4 as 8-bit
grey). An image whose walk exists is not walked again, and every file is written atomically, so
a killed run continues where it stopped.
"""

from __future__ import annotations

import collections
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from .common import stage_dir
from ..calibration import (MaskCalibration, calibration_images, cam_evidence, cam_histogram, choose_on_masks,
                           estimate_metrics, label_evidence, lower_edge_estimate, resolve_values,
                           threshold_candidates, write_calibration)
from ..config import AUTO, Config
from ..data.build import build_dataset
from ..data.dataset import TaggedImages
from ..data.transforms import eval_transform
from ..engine.checkpoint import load_model_weights
from ..engine.distributed import all_reduce_sum, barrier, shard, world
from ..engine.progress import progress_bar
from ..errors import RpnetError, OutputError
from ..io import atomic_write_text, load_mask, load_npz, readable, save_mask, save_npz
from ..layout import WorkDir, load_cams, save_boundary, update_metrics
from ..models.build import build_irn
from ..ops.calibration import BINS, score_histogram
from ..ops.cam import cams_to_labels
from ..ops.random_walk import WALK_STRIDE, scores_to_labels, strided_size, walk_cams, walk_scores
from ..runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)

NAME = "make-pseudo"


def load_scores(path: Path) -> tuple[np.ndarray, torch.Tensor]:
    """A walk file -> (keys (K,), the walked scores (K, H, W) of :func:`walk_scores`)."""
    walk = load_npz(path)
    height, width = (int(v) for v in walk["size"])
    return walk["keys"], walk_scores(torch.from_numpy(walk["walked"].astype(np.float32)), (height, width))


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Walk every image of the split, calibrate, write one pseudo mask per image; return the mask folder."""
    stage_dir(cfg, NAME)
    work = WorkDir(cfg.work_dir)
    out, edges, walks = work.pseudo_masks, work.boundaries, work.walks
    for path in (out, edges, walks):
        path.mkdir(exist_ok=True)
    split = cfg.pseudo.split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split, eval_transform())
    current = world()
    mine = shard(range(len(dataset)), current)
    ids = [dataset.records[i].id for i in mine]
    walk_images(cfg, dataset, [i for i in mine if not readable(walks / f"{dataset.records[i].id}.npz")])
    barrier()  # the calibration needs every rank's walks

    choice = choose_labels(cfg, ids, len(dataset))
    bar = progress_bar(len(ids), "make-pseudo: masks", "img", enabled=current.is_main)
    for image_id in ids:
        path = out / f"{image_id}.png"
        if not readable(path):
            save_mask(path, choice.labels(cfg, image_id))
        bar.update(1)
    bar.close()
    barrier()
    if current.is_main:
        rows = review_rows(dataset.records, dataset.class_names, out)
        atomic_write_text(work.review, review_csv(rows))
        flagged = [row for row in rows if row["flag"]]
        if flagged:
            log.warning("make-pseudo: %d tag(s) of %d image(s) got an empty or tiny pseudo mask (%s): the images to "
                        "review first are listed in %s", len(flagged), len({row["image"] for row in flagged}),
                        ", ".join(f"{name} x{count}" for name, count in
                                  collections.Counter(row["tag"] for row in flagged).most_common(5)), work.review)
    return out


TINY_SHARE = 1.0  # percent of the image: a tag's pseudo mask under this is flagged "tiny"
REVIEW_COLUMNS = ("rank", "image", "file", "tag", "percent_of_image", "flag")


def review_rows(records, class_names, masks: Path) -> list[dict]:
    """One row per (image, tag) of ``records`` with the share (%) of the image that the pseudo mask in
    ``masks`` gives the tag, and a flag: ``empty`` (no pixel), ``tiny`` (under :data:`TINY_SHARE` %) or "".
    Ranked smallest share first (ties by image id); untagged images have no row."""
    rows = []
    for record in records:
        labels = load_mask(masks / f"{record.id}.png")
        counts = np.bincount(labels.ravel(), minlength=256)
        for k in record.tags:
            share = 100.0 * counts[k + 1] / labels.size
            flag = "empty" if counts[k + 1] == 0 else "tiny" if share < TINY_SHARE else ""
            rows.append({"image": record.id, "file": record.image.name, "tag": class_names[k + 1],
                         "percent_of_image": round(share, 3), "flag": flag})
    rows.sort(key=lambda row: (row["percent_of_image"], row["image"], row["tag"]))
    return [{"rank": rank, **row} for rank, row in enumerate(rows, 1)]


def review_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, REVIEW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class LabelChoice:
    """Which labels make-pseudo writes: ``source`` "walk" (the walked scores against ``bg_threshold``)
    or "cam" (the full-size CAMs against ``cam_threshold``)."""

    source: str
    bg_threshold: float
    cam_threshold: float | None

    def labels(self, cfg: Config, image_id: str) -> np.ndarray:
        """The (H, W) uint8 pseudo mask of one image."""
        work = WorkDir(cfg.work_dir)
        if self.source == CAM:
            cam = load_cams(work.cam(image_id))
            return cams_to_labels(cam.high_res.astype(np.float32), cam.keys, self.cam_threshold)
        keys, scores = load_scores(work.walks / f"{image_id}.npz")
        return scores_to_labels(scores, keys, self.bg_threshold).numpy()


WALK, CAM = "walk", "cam"


def choose_labels(cfg: Config, ids: list[str], total: int) -> LabelChoice:
    """Calibrate the walk's background score and choose the label source; write calibration.json and,
    with a calibration split, ``pseudo_miou_estimate`` (``_low``, ``_high``) to metrics.json.

    Without a calibration split: the label-free estimate of the background score (the lower three-class
    Otsu edge of the walked scores of the whole split); ``pseudo.source: auto`` keeps the walk. With one:
    every candidate background score of the walk and, unless ``pseudo.source`` is ``walk``, every
    candidate CAM threshold (``eval_cam.threshold``'s number when it has one) is scored on the
    calibration images, and the best of them all gives the masks (``auto``: the walk's or the CAM's,
    whichever scores better). ``ids``: this rank's images, of ``total`` in the split.
    """
    work = WorkDir(cfg.work_dir)
    settings = cfg.pseudo
    histogram = np.zeros(BINS, dtype=np.int64)
    for image_id in ids:
        histogram += score_histogram(load_scores(work.walks / f"{image_id}.npz")[1].numpy())
    histogram = all_reduce_sum(histogram)
    images = calibration_images(cfg)
    configured: dict = {"bg_threshold": settings.bg_threshold}
    estimates = {"bg_threshold": lower_edge_estimate(histogram, "pseudo.bg_threshold",
                                                     needed=settings.bg_threshold == AUTO and images is None)}
    evidence = {"images": total, "walked_score_histogram": histogram.tolist()}
    source = WALK if settings.source == "auto" and images is None else settings.source
    if source == CAM or images is not None and source != WALK:  # the CAM's threshold is eval-cam's key
        configured["cam_threshold"] = cfg.eval_cam.threshold
        counts = all_reduce_sum(cam_histogram([work.cam(i) for i in ids]))
        estimates["cam_threshold"] = lower_edge_estimate(counts, "eval_cam.threshold",
                                                         needed=cfg.eval_cam.threshold == AUTO and images is None)
    masks, metrics = None, {}
    if images is not None:
        masks, source, metrics = choose_on_calibration(cfg, images, source)
    values, sources = resolve_values(configured, estimates, masks)
    if world().is_main:
        write_calibration(work.stage(NAME), configured, estimates, evidence, masks)
        if metrics:
            update_metrics(cfg.work_dir, **metrics)
        log.info("make-pseudo: labels from the %s, %s", "walk" if source == WALK else "CAMs", ", ".join(
            f"{key} {value:g} ({sources[key]})" for key, value in values.items()))
    return LabelChoice(source, values["bg_threshold"], values.get("cam_threshold"))


def choose_on_calibration(cfg: Config, images: TaggedImages, source: str) -> tuple[MaskCalibration, str, dict]:
    """(what the calibration split chose, the source chosen, the metrics of its estimate): the walk's
    candidate background scores and, unless ``source`` is walk, the CAM's candidate thresholds, all
    scored on the calibration images; the best of them all wins (:func:`rpnet.calibration.choose_on_masks`)."""
    work = WorkDir(cfg.work_dir)
    evidence, candidates = [], []
    if source != CAM:
        missing = [i for i in images.ids if not readable(work.walks / f"{i}.npz")]
        if missing:
            raise RpnetError(f"calibration images {', '.join(missing[:5])} have no walk in {work.walks}: "
                             f"pseudo.split must hold the calibration split's images")
        walks = [load_scores(work.walks / f"{image_id}.npz") for image_id in images.ids]
        thresholds = threshold_candidates(cfg.pseudo.bg_threshold)
        evidence.append(label_evidence(((scores.numpy(), keys, images[i]["mask"]) for i, (keys, scores)
                                        in enumerate(walks)), thresholds, images.num_classes + 1))
        candidates += [(WALK, float(t)) for t in thresholds]
    if source != WALK:
        thresholds = threshold_candidates(cfg.eval_cam.threshold)
        evidence.append(cam_evidence(cfg, images, thresholds))
        candidates += [(CAM, float(t)) for t in thresholds]
    choice = choose_on_masks(np.concatenate(evidence), candidates)
    chosen_source = choice.chosen[0]
    values, best = {}, {}
    for name, key in ((WALK, "bg_threshold"), (CAM, "cam_threshold")):
        scored = [(score, value) for (kind, value), score in zip(candidates, choice.scores) if kind == name]
        if scored:  # each source's best candidate (ties: the first, as choose_on_masks breaks them)
            best[name], values[key] = scored[int(np.argmax([score for score, _ in scored]))]
    notes = {"source": chosen_source, "source_scores": best}
    masks = MaskCalibration(cfg.data.calibration_split, tuple(images.ids), values, {"labels": choice}, notes)
    if world().is_main:
        other = CAM if chosen_source == WALK else WALK
        print(f"make-pseudo: the {chosen_source}'s labels score {best[chosen_source]:.1f} on the "
              f"{len(images)} calibration masks" + (f", the {other}'s {best[other]:.1f}" if other in best else ""))
    return masks, chosen_source, estimate_metrics("pseudo", choice)


def walk_images(cfg: Config, dataset, todo: list[int]) -> None:
    """Walk the CAMs of images ``todo`` of ``dataset`` on IRN's boundary maps; write walks and boundaries."""
    if not todo:
        return
    work = WorkDir(cfg.work_dir)
    edges, walks = work.boundaries, work.walks
    for i in todo:
        path = work.cam(dataset.records[i].id)
        if not path.exists():
            raise OutputError(f"no CAM for image {dataset.records[i].id} at {path}: run make-cam first", path)
    weights = work.weights("train-irn")
    if not weights.is_file():
        raise RpnetError(f"no IRN weights at {weights}: run train-irn first")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    net = build_irn(cfg.model)
    load_model_weights(weights, net)
    net.to(device).eval()
    pc = cfg.pseudo
    log.info("make-pseudo: %d of %d images to walk (%d done before)", len(todo), len(dataset), len(dataset) - len(todo))
    bar = progress_bar(len(todo), "make-pseudo: walk", "img", enabled=world().is_main)
    for sample in DataLoader(Subset(dataset, todo), batch_size=None, num_workers=cfg.data.num_workers,
                             pin_memory=device.type == "cuda"):
        image_id, image = sample["id"], sample["image"]
        height, width = image.shape[-2:]
        # IRN pads every image to its training crop, so that GroupNorm sees maps like those it trained on.
        edge = net.predict(image.to(device), flip=True, pad_to=cfg.train_irn.crop_size).edge[0]
        cam_path = work.cam(image_id)
        cam = load_cams(cam_path)
        expected = strided_size((height, width), WALK_STRIDE)
        if cam.cam.shape[1:] != expected or tuple(edge.shape) != expected:
            raise RpnetError(f"{cam_path}: stride-4 CAM of size {cam.cam.shape[1:]} and boundary map of size "
                             f"{tuple(edge.shape)}, but image {image_id} of size {(height, width)} needs {expected}; "
                             "rerun make-cam")
        strided = torch.from_numpy(cam.cam.astype(np.float32)).to(device)
        walked = walk_cams(strided, edge, radius=pc.radius, beta=pc.beta, steps=pc.steps)
        save_boundary(edges / f"{image_id}.png", edge.cpu().numpy())
        save_npz(walks / f"{image_id}.npz", keys=np.asarray(cam.keys, dtype=np.int64),
                 walked=walked.cpu().numpy().astype(np.float32), size=np.array([height, width], dtype=np.int64))
        bar.update(1)
    bar.close()
