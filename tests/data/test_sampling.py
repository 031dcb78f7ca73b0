from collections import Counter

import numpy as np
import pytest

from rpnet.data.sampling import GroupBatchSampler, ShardedSampler, shard_indices

# 11 images, 4 classes, written out so the expectations below can be checked by eye.
IMAGE_CLASSES = [
    {0}, {0, 1}, {1}, set(), {2}, {0}, {1, 3}, set(), {0, 1}, {3}, {0},
]
TAGGED = [0, 1, 2, 4, 5, 6, 8, 9, 10]  # images 3 and 7 have no tag
CLASS_MEMBERS = {0: [0, 1, 5, 8, 10], 1: [1, 2, 6, 8], 2: [4], 3: [6, 9]}


def make_tags() -> np.ndarray:
    tags = np.zeros((len(IMAGE_CLASSES), 4), dtype=bool)
    for i, classes in enumerate(IMAGE_CLASSES):
        tags[i, sorted(classes)] = True
    return tags


def groups_of(batches: list[list[int]], k: int) -> list[list[int]]:
    return [batch[i:i + k] for batch in batches for i in range(0, len(batch), k)]


def test_fixture_matches_its_description():
    tags = make_tags()
    assert np.flatnonzero(tags.any(1)).tolist() == TAGGED
    assert {c: np.flatnonzero(tags[:, c]).tolist() for c in range(4)} == CLASS_MEMBERS


@pytest.mark.parametrize("k", [2, 3, 4])
def test_every_group_shares_a_class(k):
    tags = make_tags()
    sampler = GroupBatchSampler(tags, group_size=k, batch_size=2 * k, seed=0, drop_last=False)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        for batch in batches:
            assert len(batch) % k == 0
        for group in groups_of(batches, k):
            assert len(group) == k
            assert tags[group].all(axis=0).any(), f"group {group} shares no class"


def test_recorded_class_is_shared_and_partners_distinct_when_class_is_large_enough():
    tags = make_tags()
    k = 3
    sampler = GroupBatchSampler(tags, group_size=k, batch_size=k, seed=4, drop_last=False)
    for epoch in range(10):
        sampler.set_epoch(epoch)
        groups, classes = sampler.epoch_groups()
        for group, cls in zip(groups.tolist(), classes.tolist()):
            assert cls in IMAGE_CLASSES[group[0]], "the class is one of the anchor's"
            assert all(cls in IMAGE_CLASSES[i] for i in group)
            if len(CLASS_MEMBERS[cls]) >= k:
                assert len(set(group)) == k, f"repeats in {group} although class {cls} has enough images"
        # the record describes the batches the sampler yields
        assert groups_of(list(sampler), k) == groups.tolist()


def test_each_tagged_image_is_an_anchor_exactly_once_and_untagged_never_appear():
    sampler = GroupBatchSampler(make_tags(), group_size=2, batch_size=4, seed=1, drop_last=False)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        anchors = [group[0] for group in groups_of(batches, 2)]
        assert sorted(anchors) == TAGGED
        everything = {i for batch in batches for i in batch}
        assert 3 not in everything and 7 not in everything


def test_len_and_batch_sizes_with_and_without_drop_last():
    tags = make_tags()  # 9 anchors, 2 groups of 2 per batch
    dropped = GroupBatchSampler(tags, group_size=2, batch_size=4, seed=0, drop_last=True)
    kept = GroupBatchSampler(tags, group_size=2, batch_size=4, seed=0, drop_last=False)
    assert len(dropped) == 4 and [len(b) for b in dropped] == [4, 4, 4, 4]
    assert len(kept) == 5 and [len(b) for b in kept] == [4, 4, 4, 4, 2]
    # with drop_last the anchors that remain are still distinct
    anchors = [g[0] for g in groups_of(list(dropped), 2)]
    assert len(set(anchors)) == 8 and set(anchors) <= set(TAGGED)


def test_same_seed_and_epoch_repeat_and_another_epoch_reorders():
    tags = make_tags()
    a = GroupBatchSampler(tags, group_size=2, batch_size=4, seed=7, drop_last=False)
    b = GroupBatchSampler(tags, group_size=2, batch_size=4, seed=7, drop_last=False)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    assert list(a) == list(a), "iterating twice gives the same epoch"
    first = list(a)
    a.set_epoch(4)
    assert [g[0] for g in groups_of(list(a), 2)] != [g[0] for g in groups_of(first, 2)]
    c = GroupBatchSampler(tags, group_size=2, batch_size=4, seed=8, drop_last=False)
    c.set_epoch(3)
    assert list(c) != first


def test_two_ranks_split_the_anchors():
    tags = make_tags()
    ranks = [GroupBatchSampler(tags, group_size=2, batch_size=4, seed=3, num_replicas=2, rank=r,
                               drop_last=False) for r in range(2)]
    for epoch in range(3):
        anchors = []
        for sampler in ranks:
            sampler.set_epoch(epoch)
            anchors.append([g[0] for g in groups_of(list(sampler), 2)])
        # 9 anchors padded to 10: 5 per rank, so both ranks run 3 batches
        assert [len(a) for a in anchors] == [5, 5]
        assert len(ranks[0]) == len(ranks[1]) == 3
        counts = Counter(anchors[0] + anchors[1])
        assert sorted(counts) == TAGGED
        assert sorted(counts.values()) == [1] * 8 + [2], "only the one padding anchor repeats"
        assert len(set(anchors[0])) == 5 and len(set(anchors[1])) == 5


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_the_ranks_batches_of_a_step_are_one_process_batch_of_the_global_size(num_replicas):
    # What makes a DDP step the single-process step: with a global batch of R x 2 groups, the
    # step-b batches of ranks 0..R-1, in rank order, are the single process's batch b.
    tags, k, per_rank = make_tags(), 2, 2
    single = GroupBatchSampler(tags, group_size=k, batch_size=num_replicas * per_rank, seed=5)
    ranks = [GroupBatchSampler(tags, group_size=k, batch_size=per_rank, seed=5, num_replicas=num_replicas, rank=r)
             for r in range(num_replicas)]
    for epoch in range(3):
        for sampler in [single, *ranks]:
            sampler.set_epoch(epoch)
        per_step = list(zip(*[list(r) for r in ranks]))
        # 9 anchors: the ranks pad theirs to a multiple of R (as DistributedSampler), which can add a step.
        assert len(single) > 0 and len(single) <= len(per_step) <= len(single) + 1
        for batches, whole in zip(per_step, single):
            assert sum(batches, []) == whole


def test_group_size_one_is_a_permutation_of_tagged_images():
    sampler = GroupBatchSampler(make_tags(), group_size=1, batch_size=4, seed=2, drop_last=False)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4, 1]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == TAGGED
    assert flat != TAGGED, "shuffled, not in index order"


def test_small_classes_repeat_others_before_the_anchor():
    # image 0 alone in class 0; class 1 has images 1 and 2
    tags = np.array([[1, 0], [0, 1], [0, 1]], dtype=bool)
    sampler = GroupBatchSampler(tags, group_size=3, batch_size=3, seed=0, drop_last=False)
    groups = sorted(groups_of(list(sampler), 3))
    assert groups == [[0, 0, 0], [1, 2, 2], [2, 1, 1]]


def test_batch_size_must_be_a_multiple_of_group_size():
    with pytest.raises(ValueError, match="multiple"):
        GroupBatchSampler(make_tags(), group_size=3, batch_size=4, seed=0)


def test_too_few_anchors_for_one_full_batch_is_an_error():
    with pytest.raises(ValueError, match="drop_last"):
        GroupBatchSampler(make_tags(), group_size=2, batch_size=20, seed=0, drop_last=True)


def test_bad_rank_is_an_error():
    with pytest.raises(ValueError, match="rank"):
        GroupBatchSampler(make_tags(), group_size=2, batch_size=4, seed=0, num_replicas=2, rank=2)


def test_anchor_class_is_picked_uniformly():
    # image 1 is tagged {0, 1}: over many epochs each class is picked about half the time
    sampler = GroupBatchSampler(make_tags(), group_size=2, batch_size=2, seed=5, drop_last=False)
    picks = []
    for epoch in range(400):
        sampler.set_epoch(epoch)
        groups, classes = sampler.epoch_groups()
        picks.append(int(classes[groups[:, 0] == 1][0]))
    assert 0.4 < np.mean(np.array(picks) == 0) < 0.6  # binomial sd 0.025


def test_shards_by_hand():
    assert shard_indices(10, 3, 0).tolist() == [0, 3, 6, 9]
    assert shard_indices(10, 3, 1).tolist() == [1, 4, 7]
    assert list(ShardedSampler(10, 3, 2)) == [2, 5, 8]
    assert len(ShardedSampler(10, 3, 2)) == 3
    assert list(ShardedSampler(4)) == [0, 1, 2, 3]


def test_shards_cover_every_image_once():
    for n in (0, 1, 7, 12):
        for replicas in (1, 2, 5):
            flat = [i for r in range(replicas) for i in ShardedSampler(n, replicas, r)]
            assert sorted(flat) == list(range(n))


def test_shard_rank_out_of_range():
    with pytest.raises(ValueError, match="rank"):
        shard_indices(10, 2, -1)
