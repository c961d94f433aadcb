"""Start-up cost of the ``muster`` command: wall time and modules imported, per command.

Each command runs in a new process, as the verifier init container and CI run it; the
baseline is ``python -c pass`` in the same run, so the table says what Muster adds on this
machine. Modules are counted with ``python -X importtime`` (one line per module imported).
Median over N runs::

    python benchmarks/startup.py --runs 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import admission as direct

ENTRY = "import sys; from muster.cli import main; sys.argv[0] = 'muster'; sys.exit(main())"


def commands(model: Path, digest: str) -> dict[str, list[str]]:
    """What is timed: the name printed, and the arguments after ``python``."""
    muster = ["-c", ENTRY]
    return {
        "python -c pass (baseline)": ["-c", "pass"],
        "muster --version": [*muster, "--version"],
        "muster model verify --help": [*muster, "model", "verify", "--help"],
        "muster check --help": [*muster, "check", "--help"],
        "muster image verify --help": [*muster, "image", "verify", "--help"],
        "muster model verify DIR --digest D": [
            *muster,
            "model",
            "verify",
            str(model),
            "--digest",
            digest,
        ],
    }


def make_model(root: Path) -> str:
    """A small model (three files); returns its OMS digest, measured by ``muster`` itself."""
    root.mkdir()
    for index in range(3):
        (root / f"part-{index}.bin").write_bytes(os.urandom(16_384))
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, "model", "digest", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def modules_imported(argv: list[str]) -> int:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, check=False
    )
    return sum(1 for line in done.stderr.splitlines() if line.startswith("import time:")) - 1


def wall_ms(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def results(smoke: bool, runs: int | None = None) -> dict[str, Any]:
    runs = runs or (3 if smoke else 15)
    with tempfile.TemporaryDirectory(prefix="muster-startup-") as scratch:
        model = Path(scratch) / "model"
        timed = commands(model, make_model(model))
        times: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(runs):  # interleaved, so a burst of load hits every command alike
            for name, argv in timed.items():
                times[name].append(wall_ms(argv))
        rows = [
            {
                "command": name,
                "median_ms": statistics.median(times[name]),
                "modules": modules_imported(argv),
            }
            for name, argv in timed.items()
        ]
    return {"runs": runs, "loadavg": os.getloadavg(), "commands": rows}


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """No goal yet: the start-up goals are added with the peer they are compared with."""
    return []


def table(r: dict[str, Any]) -> str:
    baseline = r["commands"][0]["median_ms"]
    rows = [
        {
            "command": c["command"],
            "median ms": f"{c['median_ms']:.0f}",
            "minus baseline ms": f"{c['median_ms'] - baseline:.0f}",
            "modules": c["modules"],
        }
        for c in r["commands"]
    ]
    return direct.table(rows, ["command", "median ms", "minus baseline ms", "modules"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median)")
    args = parser.parse_args()
    measured = results(False, args.runs)
    load = ", ".join(f"{x:.1f}" for x in measured["loadavg"])
    print(f"start-up: median of {args.runs} runs, new process each, load average {load}")
    print(table(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
