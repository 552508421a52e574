"""Bring your own model: inspect, quantize, measure and write a model folder the agent loads.

`agent.modelimport.importer.import_model` is the entry point; this package imports nothing on
its own so that registering the `models import` command stays cheap.
"""
