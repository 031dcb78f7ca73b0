"""``model.pretrained: imagenet``: a published file downloaded once from a server on 127.0.0.1 that the test
starts, checked against its hash (a wrong one refused, nothing kept), a mirror, an offline machine."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from rpnet.config import load_config
from rpnet.errors import ConfigError, DataError
from rpnet.models import published
from rpnet.models.backbones import build_backbone
from rpnet.models.build import build_classifier
from rpnet.models.published import IMAGENET, MIRROR_ENV, Published, fetch_published, pretrained_file


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "served"``; yields (base URL, folder, paths asked)."""
    root = tmp_path / "served"
    root.mkdir()
    asked = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            asked.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, asked
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub folder; no mirror set."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return tmp_path / "hub" / "checkpoints"


def served_weights(root: Path, name: str = "resnet18") -> tuple[str, dict]:
    """A resnet18's state dict saved into ``root`` under a published-style name; (sha256, state)."""
    state = build_backbone("resnet18", output_stride=32).state_dict()
    tmp = root / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(root / f"{name}-{digest[:8]}.pth")
    return digest, state


def register(monkeypatch, name: str, url: str, prefix: str | None) -> None:
    monkeypatch.setitem(published.PUBLISHED, name, Published(url, prefix))


def partials(folder: Path) -> list[str]:
    return [p.name for p in folder.glob("*.partial")] if folder.is_dir() else []


def test_a_published_file_is_downloaded_once_checked_and_loaded(server, hub, monkeypatch):
    base, root, asked = server
    digest, state = served_weights(root)
    register(monkeypatch, "testnet", f"{base}/resnet18-{digest[:8]}.pth", digest[:8])
    path = fetch_published("testnet", progress=False)
    assert path == hub / f"resnet18-{digest[:8]}.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert fetch_published("testnet", progress=False) == path  # cached: not asked again
    assert len([a for a in asked if "resnet18" in a]) == 1
    path.write_bytes(b"damaged")  # a damaged cache is downloaded again
    assert hashlib.sha256(fetch_published("testnet", progress=False).read_bytes()).hexdigest() == digest
    assert len([a for a in asked if "resnet18" in a]) == 2

    # the classifier with model.pretrained: imagenet loads exactly the served tensors
    register(monkeypatch, "resnet18", f"{base}/resnet18-{digest[:8]}.pth", digest[:8])
    cfg = load_config(None, ["model.backbone=resnet18", "model.pretrained=imagenet", "model.output_stride=32",
                             "model.prototypes=false"])
    loaded = build_classifier(cfg.model, 3).backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server, hub, monkeypatch):
    base, root, _ = server
    digest, _ = served_weights(root)
    register(monkeypatch, "testnet", f"{base}/resnet18-{digest[:8]}.pth", "00000000")
    with pytest.raises(DataError, match=r"not the published resnet18-.*nothing was kept"):
        fetch_published("testnet", progress=False)
    assert not (hub / f"resnet18-{digest[:8]}.pth").exists() and partials(hub) == []


def test_a_mirror_url_or_folder_replaces_the_publisher(server, hub, monkeypatch, tmp_path):
    base, root, asked = server
    digest, _ = served_weights(root)
    name = f"resnet18-{digest[:8]}.pth"
    register(monkeypatch, "testnet", f"http://publisher.invalid/models/{name}", digest[:8])
    monkeypatch.setenv(MIRROR_ENV, base + "/")
    assert fetch_published("testnet", progress=False).is_file()
    assert f"/{name}" in asked
    (hub / name).unlink()
    monkeypatch.setenv(MIRROR_ENV, str(root))  # a folder holding the file under its published name
    assert hashlib.sha256(fetch_published("testnet", progress=False).read_bytes()).hexdigest() == digest


def test_offline_the_error_names_the_url_the_file_and_where_to_put_it(hub, monkeypatch):
    register(monkeypatch, "testnet", "http://127.0.0.1:9/models/resnet18-12345678.pth", "12345678")
    with pytest.raises(DataError) as info:
        fetch_published("testnet", progress=False)
    message = str(info.value)
    assert "could not download http://127.0.0.1:9/models/resnet18-12345678.pth" in message
    assert f"put the file resnet18-12345678.pth at {hub / 'resnet18-12345678.pth'}" in message
    assert MIRROR_ENV in message and partials(hub) == []


def test_names_without_a_file_or_a_pinned_hash_and_paths(hub):
    with pytest.raises(ConfigError, match="knows no published file for backbone 'nonet'"):
        fetch_published("nonet")
    with pytest.raises(ConfigError, match="no checksum .* is pinned.*download https://huggingface.co/timm/"
                                          "convnext_tiny"):
        fetch_published("convnext_tiny")
    assert pretrained_file(None, "resnet50") is None
    assert pretrained_file("weights/r50.pth", "resnet50") == Path("weights/r50.pth")
    assert published.PUBLISHED["resnet50"].file_name == "resnet50-0676ba61.pth"
    assert IMAGENET == "imagenet"
