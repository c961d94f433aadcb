"""Model hashing: Muster against model_signing on two real model layouts, every hashing choice.

Two layouts are written to a temporary directory: **many small files** (2,000 files of 64 KiB
in 32 folders, as a model split into many parts) and **a few large shards** (two safetensors
shards of 1.5 GiB with their index, config and tokenizer, as Hugging Face publishes a model).
For each layout and each hashing choice ``model_signing`` 1.1 offers (sha256, blake2 and blake3
by files; sha256 and blake2 also by shards of 1 GB), Muster's ``measure`` and model_signing's
``hashing.Config().hash`` run in this process over the same bytes, taking turns so a busy
moment hits both alike, best of N; the run stops if a root digest differs. The page cache is
warm (every file is read once first), so the figures are CPU, not disk. The reference is
``sha256sum``: one process per core over the same files. CPU seconds per GB (all threads of
this process) are printed beside the wall-clock rates: on a shared machine they move less.

    python benchmarks/model_hashing.py            # full: about 3.4 GB, a few minutes
    python benchmarks/model_hashing.py --smoke    # a few MB, seconds
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import admission as direct

from muster.models import files as modelfiles
from muster.signatures.rules import oms

# model_signing's hashing choices (oms.HASHING_ALGORITHMS), typed as its API takes them.
Algorithm = Literal["sha256", "blake2", "blake3"]
ALGORITHMS: tuple[Algorithm, ...] = ("sha256", "blake2", "blake3")
# (hashing algorithm, shard size or None for files serialization); model_signing never
# shards blake3 (it hashes blake3 files whole, in parallel inside each file).
CHOICES: tuple[tuple[Algorithm, int | None], ...] = (
    ("sha256", None),
    ("blake2", None),
    ("blake3", None),
    ("sha256", oms.DEFAULT_SHARD_SIZE),
    ("blake2", oms.DEFAULT_SHARD_SIZE),
)
SMALL, LARGE = "many small files", "few large shards"
TARGET_VS_MODEL_SIGNING = 1.0
TARGET_BLAKE3_VS_SHA256 = 2.0
TARGET_VS_SHA256SUM = 0.9


def choice_name(algorithm: str, shard: int | None) -> str:
    return algorithm if shard is None else f"{algorithm} shards"


def profile(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"small": (200, 16 << 10), "shards": (2, 8 << 20), "repeat": 2}
    return {"small": (2000, 64 << 10), "shards": (2, 1536 << 20), "repeat": 3}


# -- the layouts ----------------------------------------------------------------------------


def write_small_files(root: Path, count: int, size: int) -> None:
    """``count`` files of ``size`` random bytes in 32 folders."""
    for index in range(count):
        folder = root / f"part-{index % 32:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"weights-{index:05d}.bin").write_bytes(os.urandom(size))


def write_safetensors(path: Path, size: int, block: bytes, first_layer: int) -> list[str]:
    """A safetensors file of about ``size`` bytes: its 8-byte header length, a JSON header
    naming BF16 tensors whose offsets cover the data exactly, then the data (random bytes).
    Returns the tensors' names, for the index."""
    tensor_bytes = 64 << 20
    size -= size % 2  # BF16: two bytes an element
    tensors: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, layer = 0, first_layer
    while offset < size:
        length = min(tensor_bytes, size - offset)
        tensors[f"model.layers.{layer}.mlp.weight"] = {
            "dtype": "BF16",
            "shape": [length // 2],
            "data_offsets": [offset, offset + length],
        }
        offset += length
        layer += 1
    header = json.dumps(tensors, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes
    with path.open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little"))
        handle.write(header)
        written = 0
        while written < offset:
            piece = block[: offset - written]
            handle.write(piece)
            written += len(piece)
    return [name for name in tensors if name != "__metadata__"]


def write_shards(root: Path, count: int, size: int) -> None:
    """``count`` safetensors shards of about ``size`` bytes, their index, a config and a
    tokenizer, named as Hugging Face names a sharded model's files."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(16 << 20)
    weight_map: dict[str, str] = {}
    for index in range(count):
        name = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
        for tensor in write_safetensors(root / name, size, block, len(weight_map)):
            weight_map[tensor] = name
    shard_index = {"metadata": {"total_size": count * size}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(shard_index, indent=2))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "num_layers": 32}))
    (root / "tokenizer.json").write_bytes(os.urandom(2 << 20).hex().encode()[: 2 << 20])
    (root / "generation_config.json").write_text("{}")


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def warm(root: Path) -> int:
    """Read every file once, so every run reads from memory; returns the total bytes."""
    total = 0
    for path in files_of(root):
        with path.open("rb", buffering=0) as handle:
            while chunk := handle.read(8 << 20):
                total += len(chunk)
    return total


# -- the hashers ----------------------------------------------------------------------------


def muster_digest(root: Path, algorithm: str, shard: int | None) -> str:
    serialization = oms.serialization_for(algorithm, shard)
    return modelfiles.measure(root, serialization).digest


def model_signing_digest(root: Path, algorithm: Algorithm, shard: int | None) -> str:
    from model_signing import hashing
    from model_signing._signing import signing

    config = hashing.Config()  # type: ignore[no-untyped-call]
    if shard is None:
        config.use_file_serialization(hashing_algorithm=algorithm)
    else:
        config.use_shard_serialization(hashing_algorithm=algorithm, shard_size=shard)
    manifest = config.hash(root)
    digest = signing.Payload(manifest).statement.pb.subject[0].digest["sha256"]
    return f"sha256:{digest}"


def sha256sum(root: Path, processes: int) -> str:
    """``sha256sum`` over every file, the files dealt to ``processes`` processes."""
    tool = shutil.which("sha256sum")
    if tool is None:
        raise SystemExit("sha256sum is not on PATH")
    files = [str(p) for p in files_of(root)]
    running = [
        subprocess.Popen([tool, *files[i::processes]], stdout=subprocess.DEVNULL)
        for i in range(processes)
        if files[i::processes]
    ]
    if any(process.wait() != 0 for process in running):
        raise SystemExit("sha256sum failed")
    return "done"


def timed(run: Callable[[], str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of this process (every thread) and the result of ``run``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def race(runs: dict[str, Callable[[], str]], repeat: int) -> dict[str, dict[str, Any]]:
    """Each run ``repeat`` times, taking turns; best wall time, CPU of that run, last result."""
    out: dict[str, dict[str, Any]] = {
        name: {"seconds": math.inf, "cpu_seconds": math.inf, "all_seconds": []} for name in runs
    }
    for _ in range(repeat):
        for name, run in runs.items():
            seconds, cpu, result = timed(run)
            row = out[name]
            row["all_seconds"].append(seconds)
            row["result"] = result
            if seconds < row["seconds"]:
                row["seconds"], row["cpu_seconds"] = seconds, cpu
    return out


def measure_layout(root: Path, repeat: int) -> dict[str, Any]:
    total = warm(root)
    cpus = os.cpu_count() or 1
    choices: list[dict[str, Any]] = []
    for algorithm, shard in CHOICES:
        name = choice_name(algorithm, shard)
        timed_runs = race(
            {
                "muster": functools.partial(muster_digest, root, algorithm, shard),
                "model_signing": functools.partial(model_signing_digest, root, algorithm, shard),
            },
            repeat,
        )
        ours, theirs = timed_runs["muster"], timed_runs["model_signing"]
        if ours["result"] != theirs["result"]:
            raise SystemExit(
                f"{root.name}, {name}: Muster's digest {ours['result']} is not model_signing's "
                f"{theirs['result']}"
            )
        row: dict[str, Any] = {"choice": name, "algorithm": algorithm, "shard_size": shard}
        for side, measured in timed_runs.items():
            row[side] = {
                "gb_per_s": total / measured["seconds"] / 1e9,
                "cpu_s_per_gb": measured["cpu_seconds"] / (total / 1e9),
                "median_s": statistics.median(measured["all_seconds"]),
            }
        row["ratio"] = row["muster"]["gb_per_s"] / row["model_signing"]["gb_per_s"]
        choices.append(row)
    reference = race({"sha256sum_1": lambda: sha256sum(root, 1)}, repeat)["sha256sum_1"]
    by_choice = {row["choice"]: row for row in choices}
    sha256 = by_choice["sha256"]["muster"]["gb_per_s"]
    return {
        "files": len(files_of(root)),
        "bytes": total,
        "cpus": cpus,
        "choices": choices,
        "sha256sum_1_gb_per_s": total / reference["seconds"] / 1e9,
        "reference_gb_per_s": cpus * total / reference["seconds"] / 1e9,
        "blake3_vs_sha256": by_choice["blake3"]["muster"]["gb_per_s"] / sha256,
        "model_signing_blake3_vs_sha256": (
            by_choice["blake3"]["model_signing"]["gb_per_s"]
            / by_choice["sha256"]["model_signing"]["gb_per_s"]
        ),
    }


def results(smoke: bool) -> dict[str, Any]:
    p = profile(smoke)
    layouts: dict[str, Any] = {}
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="muster-hashing-") as scratch:
        small = Path(scratch) / "many-small-files"
        write_small_files(small, *p["small"])
        layouts[SMALL] = measure_layout(small, p["repeat"])
        shutil.rmtree(small)
        shards = Path(scratch) / "few-large-shards"
        write_shards(shards, *p["shards"])
        layouts[LARGE] = measure_layout(shards, p["repeat"])
    return {
        "repeat": p["repeat"],
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
        "layouts": layouts,
    }


# -- goals and the table --------------------------------------------------------------------


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for layout, measured in r["layouts"].items():
        by_choice = {row["choice"]: row for row in measured["choices"]}
        for algorithm in ALGORITHMS:
            # The files and, where model_signing offers it, the shards serialization: both count.
            mine = [row for row in measured["choices"] if row["algorithm"] == algorithm]
            worst = min(mine, key=lambda row: row["ratio"])
            rows.append({
                "goal": f"{algorithm} hashing vs model_signing, {layout}",
                "measured": ", ".join(f"{row['ratio']:.2f}x {row['choice']}" for row in mine),
                "baseline": ", ".join(
                    f"{row['model_signing']['gb_per_s']:.2f} GB/s model_signing {row['choice']}"
                    for row in mine
                ),
                "target": f">= {TARGET_VS_MODEL_SIGNING:.1f}x",
                "met": worst["ratio"] >= TARGET_VS_MODEL_SIGNING,
            })  # fmt: skip
        rows.append({
            "goal": f"blake3 vs sha256 hashing, {layout}",
            "measured": f"{measured['blake3_vs_sha256']:.2f}x",
            "baseline": f"{by_choice['sha256']['muster']['gb_per_s']:.2f} GB/s Muster sha256",
            "target": f">= {TARGET_BLAKE3_VS_SHA256:.0f}x",
            "met": measured["blake3_vs_sha256"] >= TARGET_BLAKE3_VS_SHA256,
        })  # fmt: skip
        ratio = by_choice["sha256"]["muster"]["gb_per_s"] / measured["reference_gb_per_s"]
        rows.append({
            "goal": f"sha256 hashing vs cores x single-core sha256sum, {layout}",
            "measured": f"{ratio:.2f}x",
            "baseline": f"{measured['reference_gb_per_s']:.2f} GB/s {measured['cpus']} x sha256sum",
            "target": f">= {TARGET_VS_SHA256SUM}x",
            "met": ratio >= TARGET_VS_SHA256SUM,
        })  # fmt: skip
    return rows


COLUMNS = [
    "layout",
    "hashing",
    "muster GB/s",
    "model_signing GB/s",
    "Muster ratio",
    "muster cpu s/GB",
    "model_signing cpu s/GB",
]


def table(r: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for layout, measured in r["layouts"].items():
        for row in measured["choices"]:
            rows.append({
                "layout": layout,
                "hashing": row["choice"],
                "muster GB/s": f"{row['muster']['gb_per_s']:.2f}",
                "model_signing GB/s": f"{row['model_signing']['gb_per_s']:.2f}",
                "Muster ratio": f"{row['ratio']:.2f}x",
                "muster cpu s/GB": f"{row['muster']['cpu_s_per_gb']:.2f}",
                "model_signing cpu s/GB": f"{row['model_signing']['cpu_s_per_gb']:.2f}",
            })  # fmt: skip
        notes.append(
            f"{layout}: {measured['files']} files, {measured['bytes'] / 1e9:.2f} GB; "
            f"blake3 / sha256 {measured['blake3_vs_sha256']:.2f}x "
            f"(model_signing {measured['model_signing_blake3_vs_sha256']:.2f}x); "
            f"sha256sum {measured['sha256sum_1_gb_per_s']:.2f} GB/s on one core, "
            f"x {measured['cpus']} cores = {measured['reference_gb_per_s']:.2f} GB/s"
        )
    load = ", ".join(f"{x:.1f}" for x in (*r["loadavg_at_start"][:1], *r["loadavg_at_end"][:1]))
    header = (
        f"warm page cache, in process, best of {r['repeat']} taking turns, digests equal "
        f"(load average {load} at start, end)"
    )
    return "\n".join([header, direct.table(rows, COLUMNS), *notes])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few MB, seconds")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    measured = results(args.smoke)
    print(table(measured))
    rows = [{**g, "met": "met" if g["met"] else "MISSED"} for g in goals(measured)]
    print()
    print(direct.table(rows, ["goal", "measured", "baseline", "target", "met"]))
    if args.output is not None:
        args.output.write_text(json.dumps(measured, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
