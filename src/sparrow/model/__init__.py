"""The SPARROW network: VLM adapter, L->V heads, proposer, selector, pixel decoder, propagator, losses."""
