"""Hashing throughput: Muster vs model_signing vs sha256sum on the same model files.

Creates many small files and a few large ones in a temporary directory, warms the page
cache, then times each hasher over the same bytes and prints GB/s and ratios. Muster's
and model_signing's root digests are checked to be equal. ``--algorithms`` also times
Muster and model_signing with each hashing choice model_signing offers (sha256, blake2,
blake3; files serialization), digests checked equal per algorithm. Not run by the test
suite (``make bench`` runs the same per-algorithm comparison)::

    python benchmarks/model_hashing.py --small 2000 --small-size 65536 --large 3 --large-size 512
    python benchmarks/model_hashing.py --algorithms
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from muster.models import files as modelfiles
from muster.signatures.rules import oms

# model_signing's hashing choices (oms.HASHING_ALGORITHMS), typed as its API takes them.
Algorithm = Literal["sha256", "blake2", "blake3"]
ALGORITHMS: tuple[Algorithm, ...] = ("sha256", "blake2", "blake3")


def make_model(root: Path, small: int, small_size: int, large: int, large_mib: int) -> int:
    """Write the files (random bytes, so nothing compresses or dedups); return total bytes."""
    total = 0
    for index in range(small):
        folder = root / f"small-{index % 32:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"part-{index:05d}.bin").write_bytes(os.urandom(small_size))
        total += small_size
    block = os.urandom(1 << 20)
    for index in range(large):
        with (root / f"large-{index}.safetensors").open("wb") as handle:
            for _ in range(large_mib):
                handle.write(block)
        total += large_mib << 20
    return total


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def muster_digest(root: Path, workers: int, algorithm: str = "sha256") -> str:
    return modelfiles.measure(root, oms.serialization_for(algorithm), workers=workers).digest


def model_signing_digest(root: Path, algorithm: Algorithm = "sha256") -> str:
    from model_signing import hashing
    from model_signing._signing import signing

    config = hashing.Config().use_file_serialization(  # type: ignore[no-untyped-call]
        hashing_algorithm=algorithm
    )
    manifest = config.hash(root)
    digest = signing.Payload(manifest).statement.pb.subject[0].digest["sha256"]
    return f"sha256:{digest}"


def per_algorithm(root: Path, total: int, workers: int, repeat: int) -> dict[str, dict[str, float]]:
    """GB/s of Muster and model_signing for each hashing algorithm (best of ``repeat``), with
    Muster's speed as a multiple of model_signing's; their digests must be equal."""
    out: dict[str, dict[str, float]] = {}
    for algorithm in ALGORITHMS:
        runs: dict[str, Callable[[], object]] = {
            "muster": functools.partial(muster_digest, root, workers, algorithm),
            "model_signing": functools.partial(model_signing_digest, root, algorithm),
        }
        best = dict.fromkeys(runs, math.inf)
        digests: dict[str, object] = {}
        for _ in range(repeat):  # taking turns, so a busy moment hits both alike
            for name, run in runs.items():
                seconds, digests[name] = timed(run)
                best[name] = min(best[name], seconds)
        if digests["muster"] != digests["model_signing"]:
            raise SystemExit(
                f"{algorithm}: Muster's digest {digests['muster']} is not model_signing's "
                f"{digests['model_signing']}"
            )
        rates = {name: total / seconds / 1e9 for name, seconds in best.items()}
        out[algorithm] = {**rates, "ratio": rates["muster"] / rates["model_signing"]}
    return out


def algorithm_table(rates: dict[str, dict[str, float]]) -> str:
    lines = [f"{'algorithm':<10} {'muster GB/s':>11}  {'model_signing GB/s':>18}  Muster ratio"]
    for algorithm, row in rates.items():
        lines.append(
            f"{algorithm:<10} {row['muster']:>11.2f}  {row['model_signing']:>18.2f}  "
            f"{row['ratio']:.2f}x"
        )
    return "\n".join(lines)


def sha256sum(root: Path, parallel: int) -> None:
    files = [str(p) for p in sorted(root.rglob("*")) if p.is_file()]
    tool = shutil.which("sha256sum")
    if tool is None:
        raise SystemExit("sha256sum is not on PATH")
    chunks = [files[i::parallel] for i in range(parallel)]
    processes = [
        subprocess.Popen([tool, *chunk], stdout=subprocess.DEVNULL) for chunk in chunks if chunk
    ]
    for process in processes:
        if process.wait() != 0:
            raise SystemExit("sha256sum failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", type=int, default=2000, help="number of small files")
    parser.add_argument("--small-size", type=int, default=64 << 10, help="bytes per small file")
    parser.add_argument("--large", type=int, default=2, help="number of large files")
    parser.add_argument("--large-size", type=int, default=256, help="MiB per large file")
    parser.add_argument("--workers", type=int, default=modelfiles.DEFAULT_WORKERS)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument(
        "--algorithms",
        action="store_true",
        help="only Muster vs model_signing for each hashing algorithm (sha256, blake2, blake3)",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        root = Path(scratch) / "model"
        root.mkdir()
        total = make_model(root, args.small, args.small_size, args.large, args.large_size)
        cpus = os.cpu_count() or 1
        if args.algorithms:
            sha256sum(root, cpus)  # warm the page cache: every run reads from memory
            rates = per_algorithm(root, total, args.workers, args.repeat)
            print(
                f"{args.small + args.large} files, {total / 1e9:.2f} GB, {cpus} CPUs, warm cache, "
                f"best of {args.repeat}, files serialization, digests equal per algorithm"
            )
            print(algorithm_table(rates))
            return 0
        runs: dict[str, Callable[[], object]] = {
            "muster": lambda: muster_digest(root, args.workers),
            "model_signing": lambda: model_signing_digest(root),
            "sha256sum (1 process)": lambda: sha256sum(root, 1),
            f"sha256sum ({cpus} processes)": lambda: sha256sum(root, cpus),
        }
        sha256sum(root, cpus)  # warm the page cache: every run reads from memory
        best: dict[str, float] = {}
        digests: dict[str, object] = {}
        for name, run in runs.items():
            times = []
            for _ in range(args.repeat):
                seconds, result = timed(run)
                times.append(seconds)
                digests[name] = result
            best[name] = min(times)
        if digests["muster"] != digests["model_signing"]:
            print(f"DIGEST MISMATCH: {digests['muster']} != {digests['model_signing']}")
            return 1
        files = args.small + args.large
        print(
            f"{files} files, {total / 1e9:.2f} GB, {cpus} CPUs, warm cache, best of {args.repeat}"
        )
        print(f"root digest {digests['muster']} (Muster == model_signing)")
        base = best["muster"]
        for name, seconds in best.items():
            rate = total / seconds / 1e9
            print(
                f"  {name:<24} {rate:6.2f} GB/s  {seconds:7.3f} s  "
                f"{base / seconds:5.2f}x Muster's speed"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
