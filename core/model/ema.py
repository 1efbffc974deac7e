"""EMA teacher: an exponential moving average of the generator's weights (method §6).

The teacher scores the unmasked motion with its SQA attention; those scores choose the frames the student
must reconstruct. It is never trained by gradients and never saved as the model (as in the official code).

Effective decay = min(decay, (1 + step) / (10 + step)): the teacher follows the student closely during the
first steps (a random-weight teacher would pick meaningless frames) and settles at `decay`. The paper
uses 0.9999 for 400 epochs; short CPU runs use 0.99 (config `small`), which averages ~100 steps.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.steps = 0

    def effective_decay(self) -> float:
        return min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        d = self.effective_decay()
        for t, s in zip(self.model.parameters(), model.parameters()):
            t.mul_(d).add_(s.detach(), alpha=1.0 - d)
        for t, s in zip(self.model.buffers(), model.buffers()):
            t.copy_(s)
        self.steps += 1
        return d

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = int(state["steps"])
