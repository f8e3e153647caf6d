"""idleak: find real people inside synthetic face datasets."""

__version__ = "0.1.0"
