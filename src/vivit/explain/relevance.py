"""Class-specific relevance: gradient-weighted attention (Chefer, Gur & Wolf 2021, "Generic Attention-model
Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", Eq. 5-6).

Per layer A_bar = E_h[(grad A_h * A_h)^+], the gradient of the explained logit with respect to each head's
attention map, and R = R + A_bar R through the layers (`rollout.propagate` with mixing RELEVANCE). The fused
forward gives no attention tensor to differentiate; as y_h = A_h v_h, dlogit/dA_h = (dlogit/dy_h) v_h^T, so the
gradient of the attend output suffices.
"""

from __future__ import annotations

import torch

from vivit.explain.attention_capture import Capture, attention_probs
from vivit.explain.rollout import Step


def positive_relevance(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """(grad A * A)^+ for one head: A = softmax(q k^T / sqrt(E)), grad A = grad_y v^T."""
    return (attention_probs(q, k) * (grad_y @ v.transpose(-1, -2))).clamp_(min=0)


def relevance_steps(capture: Capture, logit: torch.Tensor) -> dict[str, list[Step]]:
    """Per encoder, the relevance steps of one scalar `logit` of the captured forward (its graph is freed)."""
    records = [r for rs in capture.records.values() for r in rs]
    grads = torch.autograd.grad(logit, [r.output for r in records], allow_unused=True)
    return capture.steps(positive_relevance, {id(r): torch.zeros_like(r.output) if g is None else g.detach()
                                              for r, g in zip(records, grads)})
