"""Robot domain: a differential-drive robot with a lidar among obstacles, and its expert."""

from sim.robot.world import RobotWorld

__all__ = ["RobotWorld"]
