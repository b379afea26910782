"""nearloop control_sim: arrives with the issues that build it (see README)."""
