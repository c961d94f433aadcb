"""The slowest event loop steps a probed ``muster run`` logged, each with the full collections
inside it and the caches refreshed ahead of their age in the 3 s before
(benchmarks/stallprobe/sitecustomize.py)::

    python benchmarks/stallprobe/summary.py /tmp/stalls [--top 10]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

FULL = re.compile(r"gen=2 ms=([0-9.]+)")
STEP = re.compile(r"^(?P<at>[0-9.]+) Executing (?P<what>.*) took (?P<took>[0-9.]+) seconds$")


def timed_lines(paths: list[Path]) -> list[tuple[float, str]]:
    lines = []
    for path in paths:
        for line in path.read_text().splitlines():
            at, _, rest = line.partition(" ")
            lines.append((float(at), rest))
    return sorted(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    steps = []
    for path in sorted(args.folder.glob("loop-*.log")):
        for line in path.read_text().splitlines():
            if match := STEP.match(line):
                steps.append((float(match["took"]), float(match["at"]), match["what"]))
    collections = timed_lines(sorted(args.folder.glob("gc-*.log")))
    refreshes = timed_lines(sorted(args.folder.glob("refresh-*.log")))
    full = [float(ms[1]) for _, text in collections if (ms := FULL.search(text))]
    print(f"{len(steps)} loop steps >= 100 ms; {len(full)} full collections, "
          f"{sum(full):.0f} ms in all, the longest {max(full, default=0):.0f} ms")  # fmt: skip
    lined_up = []
    for took, ended, what in sorted(steps, reverse=True):
        began = ended - took
        inside = [text for at, text in collections if began - 0.01 <= at <= ended + 0.01]
        before = [text for at, text in refreshes if began - 3 <= at <= ended]
        lined_up.append((took, ended, what, inside, before))
    with_full = sum(any("gen=2" in text for text in inside) for *_, inside, _ in lined_up)
    # A refresh task's step that began within 3 s of the GPU index being refreshed ahead.
    relists = sum(
        "RefreshAhead._run" in what and any("GPU index" in text for text in before)
        for _, _, what, _, before in lined_up
    )
    print(f"of the steps: {with_full} with a full collection inside, {relists} a refresh "
          f"after the GPU index was refreshed")  # fmt: skip
    for took, ended, what, inside, before in lined_up[: args.top]:
        print(f"\n{1000 * took:.0f} ms ending at {ended:.3f}: {what[:160]}")
        print(f"  collections inside: {', '.join(inside) or 'none'}")
        print(f"  refreshed in the 3 s before: {', '.join(before) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
