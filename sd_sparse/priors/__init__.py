"""Learned priors over codes: `CodePrior` models the codes of one bottleneck, samples them (generation) and
codes them into a codes file with probabilities that are the same on every machine (entropy coding)."""

from .code_prior import CodePrior, CodePriorOutput, code_events

__all__ = ["CodePrior", "CodePriorOutput", "code_events"]
