"""Data: the internal schema, video IO, RLE masks, benchmark readers/writers and the SynthRef generator."""
