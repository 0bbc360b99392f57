"""regulator: a meta-regulator daemon for neuromorphic chips."""

__version__ = "0.1.0"
