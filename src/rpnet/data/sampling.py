"""Which images go into which batch, and on which rank.

:class:`GroupBatchSampler` builds the classifier's batches (docs/method.md, stage 1):
groups of K images that share a tagged class, so that the prototype module can
compare regions across the images of a group. :class:`ShardedSampler` splits the
per-image stages (CAMs, pseudo labels) across ranks.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

# Mixed into the sampler's seed as a spawn key so that its random stream differs from
# the datasets' per-sample (seed, epoch, index) generators: numpy pads short entropy
# with zeros, so a plain (seed, epoch) would equal (seed, epoch, index=0).
SAMPLER_STREAM = 0x5A3D


def _check_rank(num_replicas: int, rank: int) -> None:
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")


def _pad_to_multiple(indices: np.ndarray, multiple: int) -> np.ndarray:
    """Repeat ``indices`` from the start until the length is a multiple of ``multiple``."""
    total = -(-len(indices) // multiple) * multiple
    return np.resize(indices, total)


class GroupBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size / group_size`` groups, each K consecutive indices sharing a class.

    Each epoch, every tagged image is an anchor once, in an order drawn from
    (seed, epoch); untagged images are never anchors, nor partners (they share no
    class). For each anchor a class is picked uniformly among its tags, then K-1
    partners tagged with that class, distinct from the anchor and from each other.
    When the class has fewer than K-1 other images, the partners cycle through all
    of those others (each once before any repeats); the anchor itself is repeated
    only when the class has no other image at all. A group is
    ``[anchor, partner_1, ..., partner_{K-1}]``; K=1 gives plain shuffled batches.

    Sharding follows ``DistributedSampler``: the epoch's anchor order is padded by
    repeating its start until it divides by ``num_replicas``, and rank r takes
    positions r, r + R, r + 2R, ...; so every rank has the same number of batches and,
    padding aside, the ranks' anchors are disjoint. Every rank computes the same
    epoch plan, so nothing needs to be communicated. With ``drop_last`` a rank's
    incomplete last batch is skipped (a different random set of anchors each epoch);
    without it the last batch has fewer groups.

    Args:
        tags: (N, C) bool, image i tagged with class c.
        group_size: K, images per group.
        batch_size: images per batch, a multiple of K.
        seed: non-negative seed; with the epoch it fixes every group.
    """

    def __init__(self, tags: np.ndarray, group_size: int, batch_size: int, seed: int,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = True) -> None:
        tags = np.asarray(tags).astype(bool)
        if tags.ndim != 2:
            raise ValueError(f"tags must be (N, C), got shape {tags.shape}")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if batch_size < 1 or batch_size % group_size:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of group_size ({group_size})")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        _check_rank(num_replicas, rank)

        self.group_size, self.batch_size, self.seed = group_size, batch_size, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0
        self.anchors = np.flatnonzero(tags.any(axis=1))
        if len(self.anchors) == 0:
            raise ValueError("no image has a tag, so there is no anchor to sample")
        self._classes_of = [np.flatnonzero(row) for row in tags]  # image -> its classes
        self._members = [np.flatnonzero(col) for col in tags.T]  # class -> its images, sorted
        if len(self) == 0:
            raise ValueError(f"{self.anchors_per_rank} anchors per rank fill no batch of "
                             f"{self.groups_per_batch} groups; lower batch_size or set drop_last=False")

    @property
    def groups_per_batch(self) -> int:
        return self.batch_size // self.group_size

    @property
    def anchors_per_rank(self) -> int:
        return -(-len(self.anchors) // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Use the groups of ``epoch``; call before iterating, as with DistributedSampler."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Number of batches this rank yields per epoch."""
        if self.drop_last:
            return self.anchors_per_rank // self.groups_per_batch
        return -(-self.anchors_per_rank // self.groups_per_batch)

    def _partners(self, anchor: int, cls: int, rng: np.random.Generator) -> np.ndarray:
        """K-1 images tagged ``cls``, distinct from ``anchor`` and each other when possible."""
        need = self.group_size - 1
        members = self._members[cls]
        num_others = len(members) - 1
        if need == 0:
            return members[:0]
        if num_others == 0:
            return np.full(need, anchor)
        anchor_pos = int(np.searchsorted(members, anchor))
        if num_others >= need:
            # Draw among the other images' positions, then step over the anchor's slot:
            # O(K) per group, where removing the anchor from a large class would be O(N).
            picks = rng.choice(num_others, size=need, replace=False)
            picks[picks >= anchor_pos] += 1
            return members[picks]
        others = rng.permutation(np.delete(members, anchor_pos))
        return np.resize(others, need)

    def epoch_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's groups for the current epoch, in order, before batching.

        Returns (groups (G, K) int64, column 0 the anchor; classes (G,) int64, the
        class each group shares), G = ``anchors_per_rank``.
        """
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch], spawn_key=(SAMPLER_STREAM,)))
        anchors = _pad_to_multiple(rng.permutation(self.anchors), self.num_replicas)
        groups = np.empty((len(anchors), self.group_size), dtype=np.int64)
        classes = np.empty(len(anchors), dtype=np.int64)
        # Every rank draws the whole epoch, so that rank r's groups match any other run's.
        for i, anchor in enumerate(anchors):
            cls = int(rng.choice(self._classes_of[anchor]))
            groups[i, 0], groups[i, 1:], classes[i] = anchor, self._partners(int(anchor), cls, rng), cls
        return groups[self.rank::self.num_replicas], classes[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        groups, _ = self.epoch_groups()
        per_batch = self.groups_per_batch
        for b in range(len(self)):
            yield groups[b * per_batch:(b + 1) * per_batch].reshape(-1).tolist()


def shard_indices(num_samples: int, num_replicas: int = 1, rank: int = 0) -> np.ndarray:
    """Rank ``rank``'s images for a per-image stage: indices rank, rank + R, ... < N.

    The shards are disjoint and together hold every index exactly once (no padding,
    so shard sizes differ by at most one).
    """
    _check_rank(num_replicas, rank)
    return np.arange(rank, num_samples, num_replicas, dtype=np.int64)


class ShardedSampler(Sampler[int]):
    """Iterate over :func:`shard_indices` in order (deterministic, no shuffling)."""

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = shard_indices(num_samples, num_replicas, rank)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices.tolist())
