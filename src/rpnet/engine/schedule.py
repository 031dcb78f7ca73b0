"""Learning-rate schedules as pure functions."""

from __future__ import annotations

import torch


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """Polynomial decay: base_lr * (1 - step / total_steps) ** power, 0 from total_steps on."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    return base_lr * max(0.0, 1.0 - step / total_steps) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], step: int, total_steps: int, power: float) -> None:
    """Set every parameter group's lr for ``step`` (each group keeps its own base, e.g. 10x for new layers)."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = poly_lr(base, step, total_steps, power)


def sgd_param_groups(backbone: list, new: list, lr: float, weight_decay: float, new_lr_mult: float) -> list[dict]:
    """IRN's two groups: backbone at ``lr``, new layers (classifier, heads) at ``new_lr_mult * lr``."""
    groups = [{"params": backbone, "lr": lr, "weight_decay": weight_decay},
              {"params": new, "lr": lr * new_lr_mult, "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]
