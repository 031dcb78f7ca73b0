"""The non-local block of the released code's reading: attention by hand, identity when new."""

import torch

from rpnet.models.non_local import NonLocalBlock, dot_product_attention


def test_dot_product_attention_by_hand():
    q, k, v = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[5.0, 6.0]]])  # (1, 1, N=2)
    # weights q_i k_j / N: row 0 [1.5, 2], row 1 [3, 4]; y_0 = 1.5*5 + 2*6 = 19.5, y_1 = 3*5 + 4*6 = 39
    torch.testing.assert_close(dot_product_attention(q, k, v), torch.tensor([[[19.5, 39.0]]]))


def test_a_new_block_is_the_identity_and_keeps_the_shape():
    torch.manual_seed(0)
    block = NonLocalBlock(6).train()
    x = torch.randn(2, 6, 3, 4)
    torch.testing.assert_close(block(x), x)  # the output batch norm starts with scale 0 and shift 0
    assert block.query.out_channels == 3 and NonLocalBlock(1).query.out_channels == 1


def test_the_block_mixes_positions_once_its_norm_is_trained():
    torch.manual_seed(0)
    block = NonLocalBlock(4).eval()
    torch.nn.init.ones_(block.norm.weight)
    x = torch.randn(1, 4, 2, 2)
    y = block(x)
    x2 = x.clone()
    x2[..., 1, 1] += 1.0  # change one position: every position's output changes
    changed = (block(x2) - y).abs().sum(dim=1)[0] > 1e-6
    assert changed.all()
