"""``NVIDIA_REQUIRE_CUDA`` requirements: ``cuda.parse_requirement`` and ``cuda.evaluate``.

Documented errors: ``cuda.GrammarError`` (``RequirementError`` and ``VersionError`` are
subclasses). A requirement that parses evaluates without error against any facts, and its
verdict does not depend on the order of its alternatives (space-separated terms are ORed).
"""

from __future__ import annotations

from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster"]):
    from muster.gpu.rules import cuda

_SEEDS = (
    "cuda>=9.0",
    "cuda>=11.8",
    "cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471",
    "cuda>=12.8 brand=grid,driver>=535,driver<536 brand=nvidiartx,driver>=550,driver<551",
    "arch>=8.0 cuda>=12.0,driver>=525.60.13",
    "brand!=geforce,cuda<13",
    "",
)
_FACTS = (
    cuda.Facts(cuda="12.4", driver="550.54.15", arch="9.0", brand="tesla"),
    cuda.Facts(cuda="11.8", driver="470.82.01", arch="7.5", brand="geforce"),
)


def seeds() -> Iterator[bytes]:
    for text in _SEEDS:
        yield text.encode()


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        groups = cuda.parse_requirement(text)
    except cuda.GrammarError as error:
        _fuzzing.check(bool(str(error)), "GrammarError without a message")
        return
    for facts in _FACTS:
        try:
            verdict = cuda.evaluate(text, facts)
        except cuda.GrammarError:
            continue  # e.g. a version too large to compare: refused, never allowed
        # A group of commas alone is a runtime quirk that ends the OR early: order matters then.
        tokens = [token for token in text.split(" ") if token]
        if len(groups) > 1 and all(token.strip(",") for token in tokens):
            try:
                again = cuda.evaluate(" ".join(reversed(text.split(" "))), facts)
            except cuda.GrammarError:
                continue
            _fuzzing.check(
                again.satisfied == verdict.satisfied, f"OR of {text!r} depends on the order"
            )


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
