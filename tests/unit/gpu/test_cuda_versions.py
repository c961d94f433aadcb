"""Driver and CUDA version values: parsing and comparison agree with the runtime's rules."""

from __future__ import annotations

import operator
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.gpu.rules import cuda

pytestmark = pytest.mark.unit

FEW = settings(max_examples=60, deadline=None)

parts = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=5)
OPS: dict[cuda.Op, Callable[[object, object], bool]] = {
    cuda.Op.EQ: operator.eq,
    cuda.Op.NE: operator.ne,
    cuda.Op.LT: operator.lt,
    cuda.Op.LE: operator.le,
    cuda.Op.GT: operator.gt,
    cuda.Op.GE: operator.ge,
}


def key(numbers: list[int]) -> tuple[int, ...]:
    """The documented rule: numeric parts, trailing zero parts ignored."""
    trimmed = list(numbers)
    while len(trimmed) > 1 and trimmed[-1] == 0:
        trimmed.pop()
    return tuple(trimmed)


def text(numbers: list[int], pad: list[int] | None = None) -> str:
    """A spelling of ``numbers``, optionally with leading zeros (revisions like ``03``)."""
    pad = pad or [0] * len(numbers)
    return ".".join(str(n).zfill(len(str(n)) + z) for n, z in zip(numbers, pad, strict=False))


def test_driver_revision_keeps_its_spelling_and_compares_numerically() -> None:
    version = cuda.parse_version("550.144.03")
    assert str(version) == "550.144.03"
    assert version.parts == (550, 144, 3)
    assert version == cuda.parse_version("550.144.3")
    assert cuda.parse_version("580.95.05") < cuda.parse_version("580.159.03")  # not textual
    assert version.major == 550 and version.minor == 144


def test_trailing_zero_parts_are_ignored() -> None:
    assert cuda.parse_version("12") == cuda.parse_version("12.0") == cuda.parse_version("12.0.0")
    assert hash(cuda.parse_version("12")) == hash(cuda.parse_version("12.0.0"))
    assert cuda.parse_version("12.0.1") > cuda.parse_version("12")
    assert cuda.parse_version("570.26") < cuda.parse_version("570.26.1")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "12.",
        ".12",
        "12..4",
        "v12.4",
        "12.4-rc1",
        "12 .4",
        "\uff11\uff12.4",
        "a",
        "18446744073709551615",
    ],
)
def test_malformed_versions_raise_a_value_error_naming_them(bad: str) -> None:
    with pytest.raises(cuda.VersionError) as error:
        cuda.parse_version(bad)
    assert isinstance(error.value, ValueError)
    assert repr(bad) in str(error.value)


def test_non_strings_are_refused() -> None:
    with pytest.raises(cuda.VersionError):
        cuda.parse_version(12.4)  # type: ignore[arg-type]


@FEW
@given(parts, st.data())
def test_parse_keeps_the_text_and_the_numbers(numbers: list[int], data: st.DataObject) -> None:
    pad = data.draw(st.lists(st.integers(0, 2), min_size=len(numbers), max_size=len(numbers)))
    spelled = text(numbers, pad)
    version = cuda.parse_version(spelled)
    assert str(version) == spelled
    assert version.parts == tuple(numbers)
    assert version.key == key(numbers)


@FEW
@given(parts, parts)
def test_ordering_is_the_documented_rule(left: list[int], right: list[int]) -> None:
    a, b = cuda.parse_version(text(left)), cuda.parse_version(text(right))
    for op, function in OPS.items():
        assert function(a, b) == function(key(left), key(right)), op


@FEW
@given(parts, parts, st.sampled_from(list(OPS)))
def test_runtime_comparison_agrees_with_version_ordering(
    left: list[int], right: list[int], op: cuda.Op
) -> None:
    a, b = cuda.parse_version(text(left)), cuda.parse_version(text(right))
    assert cuda.compare(text(left), op, text(right)) == OPS[op](a, b)


@FEW
@given(parts, st.integers(1, 3))
def test_appending_zero_parts_changes_nothing(numbers: list[int], zeros: int) -> None:
    a = cuda.parse_version(text(numbers))
    b = cuda.parse_version(text(numbers + [0] * zeros))
    assert a == b and hash(a) == hash(b)
    assert cuda.compare(str(a), cuda.Op.EQ, str(b))
    assert not cuda.compare(str(a), cuda.Op.NE, str(b))


@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        ("12.4", ">=", "12.4", True),
        ("12.4", ">", "12.4.0", False),
        ("12.4", "<", "12.4.1", True),
        ("12..4", "=", "12.4", True),  # runs of dots collapse in the runtime
        ("12.4.", "=", "12.4", True),
        ("550.144.03", "=", "550.144.3", True),
        ("535.104.12", "<", "536", True),
        ("13.0", "!=", "13", False),
    ],
)
def test_runtime_comparison_examples(left: str, op: str, right: str, expected: bool) -> None:
    assert cuda.compare(left, op, right) is expected


@pytest.mark.parametrize(("left", "right"), [("12.4", "12.x"), (".4", "12"), ("12", "-1")])
def test_runtime_comparison_errors_are_value_errors(left: str, right: str) -> None:
    with pytest.raises(cuda.GrammarError):
        cuda.compare(left, cuda.Op.GE, right)


def test_overflowing_parts_are_an_error_only_when_reached() -> None:
    huge = "18446744073709551615"
    with pytest.raises(cuda.GrammarError):
        cuda.compare("12", cuda.Op.GE, huge)
    # The first parts differ, so the runtime never parses the huge one.
    assert cuda.compare("13", cuda.Op.GT, f"12.{huge}")
    # Left-over parts are only scanned for non-zero digits, never parsed.
    assert cuda.compare("12", cuda.Op.LT, f"12.{huge}")


def test_major_minor() -> None:
    assert str(cuda.parse_version("12.8.1").major_minor) == "12.8"
    assert cuda.parse_version("12").major_minor == cuda.parse_version("12.0")
