"""What the energy_anomaly model expects: window layout and output classes (see its manifest)."""

from __future__ import annotations

FINE = 256
"""Latest mains samples in the window (one per tick, 1 s of the monitored world each)."""
COARSE = 128
"""Latest completed block minima in the window."""
BLOCK = 60
"""Ticks per block (one minute at 1 s per sample)."""
INPUT_SIZE = FINE + COARSE
CLASSES = ("normal", "spike", "compressor_failure", "standby_creep")
"""Model output order."""
HOUR_BLOCKS = 60
"""Blocks in the rolling energy aggregate (one hour at 1 s per sample)."""
MAX_W = 1e6
"""Largest plausible mains power, either direction (W): anything beyond is a broken reading."""
