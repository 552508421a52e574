"""Periodic jobs of the agent (APScheduler 3 BackgroundScheduler), listed in `status`."""

from __future__ import annotations

from agent.scheduler.jobs import JobScheduler

__all__ = ["JobScheduler"]
