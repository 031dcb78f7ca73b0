"""rpnet: weakly supervised semantic segmentation from image-level tags.

The pipeline (docs/method.md): train the RPNet classifier, make CAMs, refine them with an
inter-pixel relation network and a random walk into pseudo masks, train a DeepLab
model on those. Each stage is a command, ``rpnet <stage> CONFIG``; see ``rpnet --help``.
"""

from .config import Config, load_config
from .errors import RpnetError

__version__ = "0.1.0"

__all__ = ["Config", "load_config", "RpnetError", "Predictor", "__version__"]


def __getattr__(name: str):
    # Predictor (rpnet.predict) imports torch: load it on first use, so `rpnet --help` stays fast.
    if name == "Predictor":
        from .predict import Predictor

        return Predictor
    raise AttributeError(f"module 'rpnet' has no attribute {name!r}")
