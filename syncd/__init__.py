"""syncd: one-way secret sync from a source of truth into the platforms that consume it."""

__version__ = "0.1.0"
