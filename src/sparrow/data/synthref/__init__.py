"""SynthRef: a procedural referring-video benchmark with planted, tagged difficulties (see docs/synthref.md)."""

from sparrow.data.synthref.generate import SPLITS, SynthConfig, generate_split, make_video

__all__ = ["SPLITS", "SynthConfig", "generate_split", "make_video"]
