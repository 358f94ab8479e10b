"""Where a ViViT looks in space and time: attention rollout and gradient-weighted relevance for every variant
(`vivit explain`)."""

from vivit.explain.explainer import METHODS, ClipExplanation, explain_clip

__all__ = ["METHODS", "ClipExplanation", "explain_clip"]
