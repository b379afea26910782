"""nearloop decoders: arrives with the issues that build it (see README)."""
