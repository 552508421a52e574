"""edge-agent: on-device inference agent for edge boards."""

__version__ = "0.1.0"
