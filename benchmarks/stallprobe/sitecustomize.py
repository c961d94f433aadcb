"""Where ``muster run``'s event loop stalls, for a benchmark run (docs/performance.md, "The idle
stall"). With this folder on PYTHONPATH and MUSTER_STALL_PROBE naming a folder, every
``python -m muster run`` started writes there, per process:

- ``gc-<pid>.log``: each full collection (and any other over 5 ms): when, generation, ms;
- ``loop-<pid>.log``: each event loop step of 100 ms or more (asyncio's debug mode names it);
- ``refresh-<pid>.log``: each cache refreshed ahead of its age, and when.

``python benchmarks/stallprobe/summary.py <folder>`` lines them up. Debug mode costs CPU: the
benchmark's own figures from a probed run are not the results.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from typing import Any

FOLDER = os.environ.get("MUSTER_STALL_PROBE")


def _probe(folder: str) -> None:
    pid = os.getpid()
    collections = open(os.path.join(folder, f"gc-{pid}.log"), "a", buffering=1)  # noqa: SIM115
    started = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = 1000 * (time.perf_counter() - started[0])
        if info["generation"] == 2 or ms > 5:
            collections.write(f"{time.time():.3f} gen={info['generation']} ms={ms:.1f}\n")

    gc.callbacks.append(timed)
    os.environ["PYTHONASYNCIODEBUG"] = "1"  # read when the event loop is made
    for name, file in (("asyncio", "loop"), ("muster.refreshahead", "refresh")):
        handler = logging.FileHandler(os.path.join(folder, f"{file}-{pid}.log"))
        handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
        handler.setLevel(logging.DEBUG)
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


if FOLDER and sys.orig_argv[1:4] == ["-m", "muster", "run"]:
    _probe(FOLDER)
