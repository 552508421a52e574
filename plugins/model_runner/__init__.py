"""Run any imported model from configuration alone: sensors in, outputs and events out."""

from plugins.model_runner.config import ModelRunnerParams
from plugins.model_runner.plugin import ModelRunnerPlugin

__all__ = ["ModelRunnerParams", "ModelRunnerPlugin"]
