"""Lights a lamp while the signal on one sensor is a square wave (waveform_classifier)."""

from squarewatch.plugin import SquareWatch, SquareWatchParams

__all__ = ["SquareWatch", "SquareWatchParams"]
