"""Exponential moving average of the trainable weights (fp32 shadow, sharded like the weights).

After every optimizer step: ema <- decay * ema + (1 - decay) * param, for trainable parameters
only (frozen ones equal the model's by definition). Under FSDP2 the shadow holds DTensors with the
parameters' placements, so the update is rank-local (no communication).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unimedvl.train.parallel import local_tensor


class EMA:
    """fp32 shadow of ``model``'s trainable parameters; ``state`` is name -> tensor."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        with torch.no_grad():
            self.state: dict[str, Tensor] = {n: params[n].detach().to(torch.float32, copy=True) for n in self.names}
        self._params = [params[n] for n in self.names]

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow towards the current weights by one step (after each optimizer step)."""
        weight = 1.0 - self.decay
        shadow = [local_tensor(self.state[n]) for n in self.names]
        current = [local_tensor(p.detach()).float() for p in self._params]
        torch._foreach_lerp_(shadow, current, weight)

    @torch.no_grad()
    def copy_from_model(self) -> None:
        """Reset the shadow to the current weights (a resume from a checkpoint without EMA)."""
        for name, p in zip(self.names, self._params):
            local_tensor(self.state[name]).copy_(local_tensor(p.detach()).float())
