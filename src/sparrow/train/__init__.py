"""Training: stages as YAML configs, a loop on accelerate, atomic checkpoints with exact resume (``sparrow train``)."""
