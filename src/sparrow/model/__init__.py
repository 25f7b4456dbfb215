"""The SPARROW network: SAM2 backbone, pixel decoder, propagator, VLM adapter, heads, proposer, selector."""
