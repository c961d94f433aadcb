"""``muster run`` loads the bundle verifier at start, not on its first cold admission.

Not a timing test: a fresh interpreter reports which modules it holds before and after.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

_PROBE = """
import sys
from muster.app import runtime
before = "sigstore" in sys.modules
runtime.preload_verifiers()
print(before, "sigstore" in sys.modules, "muster.signatures.rules.bundles" in sys.modules)
"""


def test_muster_run_loads_the_bundle_verifier_before_any_admission() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    )
    # Importing the composition root leaves sigstore to the first bundle (commands start
    # fast); the preload muster run calls loads it.
    assert done.stdout.split() == ["False", "True", "True"]
