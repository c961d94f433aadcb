"""The atheris harnesses in ``fuzz/`` run briefly in CI: no crash, and real fuzzing happened.

Each target gets a couple of seconds of coverage-guided fuzzing (libFuzzer under atheris) over
its seed corpus; the longer run is documented in docs/security.md. A harness that raises is
reported as a crash, which the last test shows with a harness that always fails.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration import docblocks

pytestmark = pytest.mark.integration

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"


def _documented_short_run() -> list[str]:
    """The arguments of docs/security.md's short run (``--seconds 2``: nine targets stay under
    a minute with process start-up)."""
    (block,) = docblocks.named("delegated", "tests/integration/test_fuzz.py")
    (argv,) = list(docblocks.command_lines(block))
    assert argv[:2] == [".venv/bin/python", "fuzz/run.py"], argv
    return argv[2:]


SHORT_RUN = _documented_short_run()


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_runner", FUZZ / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_runner", module)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()


def test_every_parser_has_a_harness() -> None:
    assert set(RUNNER.TARGETS) == {
        "attestations",
        "bundles",
        "cosign",
        "cuda",
        "licences",
        "notation",
        "oms",
        "pickles",
        "references",
        "registries",
        "reviews",
        "safetensors",
    }


@pytest.mark.parametrize("target", RUNNER.TARGETS)
def test_a_short_fuzzing_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    """The documented short run, one target per test (``--target``), its results as JSON."""
    output = tmp_path / "fuzz.json"
    argv = [*SHORT_RUN, "--target", target, "--artifacts", str(tmp_path / "artifacts")]
    code = RUNNER.main([*argv, "--json", str(output)])
    (result,) = json.loads(output.read_text())
    assert code == 0, f"{target} crashed: {result['crashes']}\n{result['log_tail']}"
    assert result["returncode"] == 0
    assert result["crashes"] == []
    assert result["iterations"] >= 100, result["log_tail"]  # libFuzzer's executed units
    assert result["coverage"] > 0, result["log_tail"]  # instrumented edges reached in muster
    assert result["corpus"] > 0, result["log_tail"]


def test_a_failing_harness_is_reported_as_a_crash(tmp_path: Path) -> None:
    harness = tmp_path / "fuzz_failing.py"
    harness.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(FUZZ)!r})\n"
        "import _fuzzing\n\n"
        "def test_one_input(data: bytes) -> None:\n"
        "    _fuzzing.check(b'\\x00' not in data and len(data) < 4, 'found it')\n\n"
        "_fuzzing.main(test_one_input, lambda: [b'abc'])\n"
    )
    result = RUNNER.run_target("failing", 20, artifacts=tmp_path / "artifacts", harness=harness)
    assert result.crashed
    assert result.returncode != 0
    assert len(result.crashes) == 1
    assert "Inconsistent: found it" in result.log_tail
