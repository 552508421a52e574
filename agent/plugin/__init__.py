"""Plugin seam and host."""
