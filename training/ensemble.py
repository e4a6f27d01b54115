"""A small ensemble of MLPs that predicts each setpoint's next move; the action is setpoint + mean move.

All members live in one module as stacked weights (one batched matmul per layer), so training and
inference cost one pass, and the ONNX graph is a handful of MatMul/Add/Relu nodes. Working in
scaled units throughout: the action output is in the contract's output scaling, and the residual
input columns must use that same scaling (the caller builds the scalings so they do).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


class ResidualMLPEnsemble(nn.Module):
    def __init__(self, n_in: int, n_out: int, residual_cols: Sequence[int], move_scale: Sequence[float],
                 *, members: int = 5, hidden: int = 64):
        """`residual_cols`: for each output, the input column holding its current value (scaled like the
        output). `move_scale`: typical size of one move per output, in output units, so the networks
        learn O(1) targets."""
        super().__init__()
        if len(residual_cols) != n_out or len(move_scale) != n_out:
            raise ValueError(f"need {n_out} residual columns and move scales")
        self.members = members

        def layer(fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            w = torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)
            b = torch.empty(members, 1, fan_out).uniform_(-bound, bound)
            return nn.Parameter(w), nn.Parameter(b)

        self.w1, self.b1 = layer(n_in, hidden)
        self.w2, self.b2 = layer(hidden, hidden)
        self.w3, self.b3 = layer(hidden, n_out)
        self.register_buffer("residual_cols", torch.as_tensor(list(residual_cols), dtype=torch.long))
        self.register_buffer("move_scale", torch.as_tensor(list(move_scale), dtype=torch.float32))

    def moves(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised moves of every member: x [B, n_in] (shared) or [K, B, n_in] (per member) -> [K, B, n_out]."""
        h = torch.relu(torch.matmul(x, self.w1) + self.b1)
        h = torch.relu(torch.matmul(h, self.w2) + self.b2)
        return torch.matmul(h, self.w3) + self.b3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moves = self.moves(x) * self.move_scale
        mean = moves.mean(dim=0)
        spread = ((moves - mean) ** 2).mean(dim=0).sqrt()  # population std across members
        return torch.index_select(x, 1, self.residual_cols) + mean, spread


def train_ensemble(model: ResidualMLPEnsemble, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int,
                   batch_size: int = 256, lr: float = 2e-3, weight_decay: float = 1e-5,
                   on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit every member on its own bootstrap draws (sampling with replacement gives the members
    different data, which is what makes their spread mean something). x, y in scaled units.
    Returns the mean training loss per epoch (also handed to `on_epoch(epoch, loss)` as it comes)."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    target = (torch.as_tensor(y, dtype=torch.float32) - xt[:, model.residual_cols]) / model.move_scale
    n = xt.shape[0]
    steps = max(1, math.ceil(n / batch_size))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    losses = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        for _ in range(steps):
            idx = torch.randint(n, (model.members, batch_size), generator=gen)
            loss = ((model.moves(xt[idx]) - target[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        losses.append(total / steps)
        if on_epoch is not None:
            on_epoch(len(losses), losses[-1])
    model.eval()
    return losses


def predict(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(action, spread) of the torch model on scaled inputs, in scaled output units."""
    with torch.no_grad():
        action, spread = model(torch.as_tensor(x, dtype=torch.float32))
    return action.numpy(), spread.numpy()
