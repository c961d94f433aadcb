"""Run the atheris harnesses in this folder: ``python fuzz/run.py --seconds N [--target T]``.

Each harness ``fuzz_<target>.py`` runs in its own process under libFuzzer for ``N`` seconds,
over its seed corpus (``corpus/<target>/``, real samples) plus seeds it generates. New
interesting inputs go to a scratch folder, so the checked-in corpus never changes unless
``--corpus-out`` asks for it. Crash, timeout and out-of-memory inputs are copied to
``--artifacts``. Exit status: 0 when no harness crashed, 1 when one did, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = tuple(sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py")))
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs in")
_COVERAGE = re.compile(r"\bcov: (\d+)")
_CORPUS = re.compile(r"\bcorp: (\d+)/")


@dataclasses.dataclass
class Result:
    target: str
    seconds: float
    returncode: int
    iterations: int
    coverage: int
    corpus: int
    crashes: list[str]
    log_tail: str

    @property
    def crashed(self) -> bool:
        return self.returncode != 0 or bool(self.crashes)


def _tail(log: str) -> str:
    """The Python exception libFuzzer caught, if any, then the end of the log."""
    start = log.find("=== Uncaught Python exception")
    exception = log[start : start + 3000] + "\n...\n" if start >= 0 else ""
    return exception + log[-2000:]


def run_target(
    target: str,
    seconds: int,
    *,
    artifacts: Path,
    corpus_out: Path | None = None,
    timeout_per_input: int = 10,
    rss_limit_mb: int = 2048,
    harness: Path | None = None,
) -> Result:
    """Fuzz one target for ``seconds`` and report what libFuzzer said."""
    harness = harness or HERE / f"fuzz_{target}.py"
    seeds = HERE / "corpus" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        work = Path(scratch) / "corpus"
        found = Path(scratch) / "artifacts"
        work.mkdir()
        found.mkdir()
        command = [
            sys.executable,
            str(harness),
            str(work),
            *([str(seeds)] if seeds.is_dir() else []),
            f"-max_total_time={seconds}",
            f"-timeout={timeout_per_input}",
            f"-rss_limit_mb={rss_limit_mb}",
            f"-artifact_prefix={found}/",
            "-print_final_stats=1",
        ]
        started = time.monotonic()
        try:
            process = subprocess.run(
                command,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=seconds + 300,
                check=False,
            )
            log, returncode = process.stdout + process.stderr, process.returncode
        except subprocess.TimeoutExpired as error:
            output = [
                o.decode(errors="replace") if isinstance(o, bytes) else o or ""
                for o in (error.stdout, error.stderr)
            ]
            log = "".join(output) + "\nharness did not stop in time"
            returncode = -1
        elapsed = time.monotonic() - started
        crashes = []
        for path in sorted(found.iterdir()):
            shutil.copy(path, artifacts / f"{target}-{path.name}")
            crashes.append(str(artifacts / f"{target}-{path.name}"))
        if corpus_out is not None:
            destination = corpus_out / target
            destination.mkdir(parents=True, exist_ok=True)
            for path in work.iterdir():
                shutil.copy(path, destination / path.name)
    executed = _EXECUTED.findall(log) or _DONE.findall(log)
    return Result(
        target=target,
        seconds=round(elapsed, 1),
        returncode=returncode,
        iterations=int(executed[-1]) if executed else 0,
        coverage=max((int(c) for c in _COVERAGE.findall(log)), default=0),
        corpus=max((int(c) for c in _CORPUS.findall(log)), default=0),
        crashes=crashes,
        log_tail=_tail(log),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, required=True, help="fuzzing time per target")
    parser.add_argument("--target", action="append", choices=TARGETS, help="repeatable")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--corpus-out", type=Path, help="keep the grown corpus here")
    parser.add_argument("--timeout-per-input", type=int, default=10, help="seconds")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    results = []
    for target in args.target or TARGETS:
        result = run_target(
            target,
            args.seconds,
            artifacts=args.artifacts,
            corpus_out=args.corpus_out,
            timeout_per_input=args.timeout_per_input,
        )
        results.append(result)
        state = "CRASH" if result.crashed else "ok"
        print(
            f"{target:12} {state:5} iterations={result.iterations} cov={result.coverage}"
            f" corpus={result.corpus} seconds={result.seconds}",
            flush=True,
        )
        if result.crashed:
            print(result.log_tail, file=sys.stderr)
    total = sum(r.iterations for r in results)
    crashed = [r.target for r in results if r.crashed]
    print(f"total iterations={total} targets={len(results)} crashed={len(crashed)} {crashed}")
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
