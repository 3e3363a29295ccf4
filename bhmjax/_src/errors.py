"""Errors raised by more than one layer (defined once, below them all)."""

from __future__ import annotations

__all__ = ["FitFileError"]


class FitFileError(ValueError):
    """A fit file that cannot be read: truncated, corrupted, foreign, or from a newer bhmjax."""
