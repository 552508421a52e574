"""Robot control: a distilled int8 policy drives a differential-drive robot, under an e-stop."""

from plugins.robot.config import RobotParams
from plugins.robot.plugin import RobotPlugin

__all__ = ["RobotParams", "RobotPlugin"]
