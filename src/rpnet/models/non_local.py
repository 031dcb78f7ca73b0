"""A non-local block (embedded dot-product self-attention with a residual), as the released RPNet code uses.

Wang et al., "Non-local Neural Networks" (CVPR 2018), the "dot product" form: the pairwise weights
are theta(x_i) . phi(x_j) divided by the number of positions N (no softmax), the output goes through a
1x1 conv and a batch norm whose scale and shift start at zero, so that a new block is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def dot_product_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """y_i = sum_j (q_i . k_j / N) v_j over the N positions.

    query, key, value (B, D, N) -> (B, D_v, N).
    """
    n = key.shape[-1]
    weights = torch.matmul(query.transpose(1, 2), key) / n  # (B, N, N): row i holds q_i . k_j / N
    return torch.matmul(value, weights.transpose(1, 2))  # (B, D_v, N)


class NonLocalBlock(nn.Module):
    """x + BN(W y), y = the dot-product attention of 1x1 projections of x into ``channels // 2`` channels.

    (B, C, H, W) -> (B, C, H, W). The batch norm is an ordinary ``nn.BatchNorm2d`` (batch statistics in
    ``train()``, running statistics in ``eval()``).
    """

    def __init__(self, channels: int, inner: int | None = None) -> None:
        super().__init__()
        inner = inner or max(1, channels // 2)
        self.query = nn.Conv2d(channels, inner, 1)  # theta
        self.key = nn.Conv2d(channels, inner, 1)  # phi
        self.value = nn.Conv2d(channels, inner, 1)  # g
        self.out = nn.Conv2d(inner, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        y = dot_product_attention(self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2))
        return x + self.norm(self.out(y.view(b, -1, h, w)))
