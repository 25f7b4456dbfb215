"""Grounding diagnostics: what a model's prompts, visual tokens and SAM2 features carry (``benchmarks/probe_grounding.py``)."""
