"""Synthetic GammaPlan-style brain-metastasis cohort with ground truth (see README.md)."""

from .cohort import GENERATOR_VERSION, generate_cohort

__all__ = ["GENERATOR_VERSION", "generate_cohort"]
