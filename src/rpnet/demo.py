"""``rpnet demo``: the whole pipeline on the built-in synthetic dataset, baseline and RPNet.

Generates the dataset (once), then runs every stage of :data:`rpnet.cli.STAGES` with the
pipeline runner (``rpnet run``) for the plain-CAM baseline (``model.prototypes=false``) and
for RPNet, each in its own work dir under ``OUT``, with ``configs/synthetic.yaml``. A rerun
skips the stages whose inputs are unchanged and continues one that was killed. Ends with
the baseline-vs-RPNet table, also written to ``OUT/summary.json``, and the HTML report
``OUT/report.html``.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Sequence

from .config import load_config
from .data.synthetic import generate
from .io import read_json, write_json
from .layout import WorkDir
from .pipeline.runner import run_pipeline
from .report import write_report

log = logging.getLogger(__name__)

MODELS = {"baseline": False, "rpnet": True}
SUMMARY_KEYS = {"cam_miou": "CAM mIoU", "cam_threshold": "CAM bg threshold",
                "cam_miou_best": "CAM mIoU, GT-best t", "cam_threshold_best": "GT-best threshold",
                "pseudo_miou": "pseudo-label mIoU",
                "seg_miou": "segmentation mIoU", "seg_miou_crf": "seg. mIoU with CRF"}


def synthetic_config() -> Path:
    """The packaged ``configs/synthetic.yaml``."""
    return Path(str(resources.files("rpnet") / "configs" / "synthetic.yaml"))


def run_demo(out: Path, *, n_train: int = 200, n_val: int = 60, size: int = 128, seed: int = 0,
             overrides: Sequence[str] = ()) -> dict:
    """Run the demo into ``out``; ``overrides`` (``KEY=VALUE``) shrink it for tests. Returns the summary."""
    out = Path(out)
    data = out / "data"
    if not (data / "synth.json").exists():
        generate(data, n_train=n_train, n_val=n_val, size=size, seed=seed)
    summary: dict[str, dict] = {}
    for name, prototypes in MODELS.items():
        cfg = load_config(synthetic_config(), [
            f"data.root={data}", f"work_dir={out / name}", f"seed={seed}", f"model.prototypes={str(prototypes).lower()}",
            *overrides,
        ])
        log.info("demo: %s", name)
        # A skipped stage reports the duration of the run that made its outputs.
        seconds = {result.name: round(result.seconds, 1) for result in run_pipeline(cfg)}
        summary[name] = {**{k: v for k, v in read_json(WorkDir(out / name).metrics).items() if k in SUMMARY_KEYS},
                         "seconds": seconds}
    write_json(out / "summary.json", summary)
    report = write_report({name: out / name for name in MODELS}, out / "report.html",
                          title="rpnet demo: baseline vs RPNet on synthetic data")
    print(format_summary(summary))
    print(f"report: {report}")
    return summary


def format_summary(summary: dict[str, dict]) -> str:
    names = list(summary)
    lines = [f"{'':<20}" + "".join(f"{n:>12}" for n in names)]
    for key, label in SUMMARY_KEYS.items():
        if any(key in summary[n] for n in names):  # a stage that is not in the pipeline leaves no row
            lines.append(f"{label:<20}" + "".join(f"{summary[n].get(key, float('nan')):>12.2f}" for n in names))
    lines.append(f"{'minutes':<20}" + "".join(f"{sum(summary[n]['seconds'].values()) / 60:>12.1f}" for n in names))
    return "\n".join(lines)
