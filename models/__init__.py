"""Shipped models (one folder each) and the scripts that train and quantize them (models/train)."""
