"""Peer programs the tests run as real processes or threads."""
