"""Benchmarks behind `edge-agent bench`: the engine against bare baselines (engine.py, bare.py)
and MQTT sync against bare paho (sync.py)."""
