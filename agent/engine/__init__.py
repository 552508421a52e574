"""The real-time engine: fixed-rate loops (loop.py), histograms, mailbox, GC in slack,
supervision and restarts (runner.py, supervisor.py); `api.py` is what the rest of the agent sees."""
