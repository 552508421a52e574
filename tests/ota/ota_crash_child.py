"""A device that updates its model over and over, to be killed with SIGKILL at random moments.

    python -m tests.ota.ota_crash_child STATE_DIR KEYS_DIR WORK_DIR VERSION_DIR...

Runs recover(), then forever: packs the next version folder into a bundle (a fresh serial,
downgrades allowed), feeds it to the receiver chunk by chunk, waits for the outcome, and every
third round rolls back by command. Prints READY before the first round, then one line per round.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from agent.errors import OtaError
from agent.ota import OtaService, recover
from tests.support.ota import NAME, feed, make_config, pack


def main(argv: list[str]) -> None:
    """Update in a loop until killed."""
    state, keys, work = Path(argv[0]), Path(argv[1]), Path(argv[2])
    folders = [Path(a) for a in argv[3:]]
    config = make_config(state.parent, [keys / "public.pem"], keep_versions=2)
    assert config.state_dir == state
    recover(state)
    service = OtaService(config)
    rx = service.receiver(NAME)
    print("READY", flush=True)
    for i in range(1_000_000):
        bundle = work / f"{i % 2}.tar"
        pack(folders[i % len(folders)], keys, bundle, allow_downgrade=True, chunk_size=2048)
        feed(rx, bundle)
        final = rx.wait(60.0)
        print(i, final["state"], final["version"], final["reason"], flush=True)
        if i % 3 == 2:
            with contextlib.suppress(OtaError):
                service.rollback(NAME)
        time.sleep(0.001)  # a breath between rounds (the parent kills at random moments)


if __name__ == "__main__":
    main(sys.argv[1:])
