"""ImageNet weights by name: ``model.pretrained: imagenet``.

Each backbone's published ImageNet file (torchvision's ``IMAGENET1K_V1`` for the ResNet family) is
listed in :data:`PUBLISHED` with the first hex digits of its sha256, as its publisher puts them in
the file name. :func:`pretrained_file` downloads it once into the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, as torchvision does, so a file torchvision already fetched is
reused) with torch's own downloader (:func:`torch.hub.download_url_to_file`: a progress bar, a
temporary file that is checked against the hash and removed when it does not match), and checks the
cached file's hash each time it is used. ``RPNET_WEIGHTS_MIRROR`` replaces the publisher's address:
a URL (``http://host/models``) or a folder holding the files under their published names, for
machines behind a proxy or offline. Any other ``model.pretrained`` value is a path, loaded as it is.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..io import file_sha256

log = logging.getLogger(__name__)

IMAGENET = "imagenet"  # the model.pretrained value that names the backbone's published file
MIRROR_ENV = "RPNET_WEIGHTS_MIRROR"
TORCHVISION = "https://download.pytorch.org/models"


@dataclass(frozen=True)
class Published:
    """One published weights file: where it is and the leading hex digits of its sha256 (None: no
    checksum pinned, so it is not downloaded: the error names the address to fetch it from by hand)."""

    url: str
    sha256_prefix: str | None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


PUBLISHED: dict[str, Published] = {
    "resnet18": Published(f"{TORCHVISION}/resnet18-f37072fd.pth", "f37072fd"),
    "resnet34": Published(f"{TORCHVISION}/resnet34-b627a593.pth", "b627a593"),
    "resnet50": Published(f"{TORCHVISION}/resnet50-0676ba61.pth", "0676ba61"),
    "resnet101": Published(f"{TORCHVISION}/resnet101-63fe2227.pth", "63fe2227"),
    "resnext50_32x4d": Published(f"{TORCHVISION}/resnext50_32x4d-7cdf4587.pth", "7cdf4587"),
    "resnext101_32x8d": Published(f"{TORCHVISION}/resnext101_32x8d-8ba56ff5.pth", "8ba56ff5"),
    "wide_resnet50_2": Published(f"{TORCHVISION}/wide_resnet50_2-95faca4d.pth", "95faca4d"),
    "wide_resnet101_2": Published(f"{TORCHVISION}/wide_resnet101_2-32ee1156.pth", "32ee1156"),
    # timm's files on the Hugging Face hub carry no checksum in their name and none is pinned here
    "convnext_tiny": Published("https://huggingface.co/timm/convnext_tiny.fb_in1k/resolve/main/model.safetensors",
                               None),
    "convnext_small": Published("https://huggingface.co/timm/convnext_small.fb_in1k/resolve/main/model.safetensors",
                                None),
    "convnext_base": Published("https://huggingface.co/timm/convnext_base.fb_in1k/resolve/main/model.safetensors",
                               None),
}


def pretrained_file(pretrained: str | Path | None, backbone: str, *, progress: bool = True) -> Path | None:
    """The weights file ``model.pretrained`` names for ``backbone``: None for None, the published file
    (downloaded when not cached, :func:`fetch_published`) for ``imagenet``, else the path as given."""
    if pretrained is None:
        return None
    if str(pretrained) == IMAGENET:
        return fetch_published(backbone, progress=progress)
    return Path(pretrained)


def cache_dir() -> Path:
    """Where downloaded weights live: torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def source_url(entry: Published) -> str:
    """``entry``'s address, or its file under ``$RPNET_WEIGHTS_MIRROR`` (a URL, or a folder as a file:// URL)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return entry.url
    base = mirror.rstrip("/") if "://" in mirror else Path(mirror).expanduser().resolve().as_uri()
    return f"{base}/{entry.file_name}"


def fetch_published(backbone: str, *, progress: bool = True) -> Path:
    """The cached published ImageNet file of ``backbone``, downloaded first when it is not cached or its
    hash does not match. Errors (:class:`ConfigError`, :class:`DataError`) name the address, the file
    name and where to put the file by hand."""
    entry = PUBLISHED.get(backbone)
    if entry is None:
        raise ConfigError(f"model.pretrained: {IMAGENET} knows no published file for backbone {backbone!r} (it knows "
                          f"{', '.join(sorted(PUBLISHED))}); give the path of ImageNet weights instead")
    target = cache_dir() / entry.file_name
    by_hand = (f"download {entry.url} yourself and give its path as model.pretrained, or put it at {target}"
               if entry.sha256_prefix is None else f"put the file {entry.file_name} at {target}, or set {MIRROR_ENV} "
               "to a mirror (a URL or a folder holding it), or give a path as model.pretrained")
    if entry.sha256_prefix is None:
        if target.is_file():
            return target
        raise ConfigError(f"model.pretrained: {IMAGENET} for {backbone}: no checksum of its published file is pinned, "
                          f"so rpnet does not download it: {by_hand}")
    if target.is_file():
        if file_sha256(target).startswith(entry.sha256_prefix):
            return target
        log.warning("%s does not match the published sha256 %s...: downloading it again", target,
                    entry.sha256_prefix)
    url = source_url(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s's ImageNet weights from %s to %s", backbone, url, target)
    try:  # a temporary file beside the target, checked, then moved: removed on any failure
        torch.hub.download_url_to_file(url, str(target), hash_prefix=entry.sha256_prefix, progress=progress)
    except RuntimeError as exc:  # the hash did not match
        raise DataError(f"{url}: the downloaded file is not the published {entry.file_name} ({exc}); nothing was "
                        f"kept. {by_hand[0].upper()}{by_hand[1:]}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:  # no network, a proxy, a 404, a bad mirror
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"could not download {url} ({reason}): {by_hand}") from None
    return target
