"""Simulators of each domain, used by the sim HAL backend, evaluations and tests."""
