"""NVIDIA_REQUIRE_CUDA evaluated exactly as libnvidia-container does, on real image strings."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.gpu.rules import cuda
from tests.unit.gpu.conftest import image_entries, image_env

pytestmark = pytest.mark.unit

FEW = settings(max_examples=80, deadline=None)
H100 = cuda.Facts(cuda="12.4", driver="550.54.15", arch="9.0")

# --- a straightforward reference model of the documented grammar ------------------------

_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _key(version: str) -> tuple[int, ...]:
    numbers = [int(part) for part in version.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


@dataclasses.dataclass(frozen=True)
class RefTerm:
    prop: str
    op: str
    value: str

    def holds(self, facts: cuda.Facts) -> bool:
        have = getattr(facts, self.prop.lower())
        if self.prop.lower() == "brand":
            return _PY_OPS[self.op](have.lower(), self.value.lower())
        return _PY_OPS[self.op](_key(have), _key(self.value))


def reference(groups: list[list[RefTerm]], facts: cuda.Facts) -> bool:
    """Space = OR, comma = AND; no groups at all = satisfied."""
    return not groups or any(all(term.holds(facts) for term in group) for group in groups)


versions = st.lists(st.integers(0, 600), min_size=1, max_size=4).map(
    lambda parts: ".".join(map(str, parts))
)
brands = st.sampled_from(["Tesla", "tesla", "GeForce", "NVIDIA", "Quadro", "nvidiartx"])


@st.composite
def terms(draw: st.DrawFn) -> RefTerm:
    prop = draw(st.sampled_from(["cuda", "driver", "arch", "brand", "CUDA", "Driver"]))
    if prop == "brand":
        return RefTerm(prop, draw(st.sampled_from(["=", "!="])), draw(brands))
    return RefTerm(prop, draw(st.sampled_from(list(_PY_OPS))), draw(versions))


@st.composite
def requirements(draw: st.DrawFn) -> tuple[str, list[list[RefTerm]]]:
    groups = draw(st.lists(st.lists(terms(), min_size=1, max_size=3), max_size=4))
    spelled = []
    for group in groups:
        pieces = [f"{t.prop}{t.op}{t.value}" for t in group]
        # Empty pieces (",,", leading or trailing commas) are skipped by the runtime.
        prefix = draw(st.sampled_from(["", ","]))
        suffix = draw(st.sampled_from(["", ",", ",,"]))
        spelled.append(
            prefix + ",,".join(pieces)
            if draw(st.booleans())
            else prefix + ",".join(pieces) + suffix
        )
    separator = draw(st.sampled_from([" ", "  "]))
    return draw(st.sampled_from(["", " "])) + separator.join(spelled), groups


facts_strategy = st.builds(cuda.Facts, cuda=versions, driver=versions, arch=versions, brand=brands)


@FEW
@given(requirements(), facts_strategy)
def test_evaluation_matches_the_reference_model(
    requirement: tuple[str, list[list[RefTerm]]], facts: cuda.Facts
) -> None:
    text, groups = requirement
    assert cuda.evaluate(text, facts).satisfied == reference(groups, facts)
    # Well-formed requirements also pass the strict parser, term for term.
    parsed = cuda.parse_requirement(text)
    assert [[str(term) for term in group] for group in parsed] == [
        [f"{t.prop}{t.op}{t.value}" for t in group] for group in groups
    ]


@FEW
@given(requirements(), requirements(), facts_strategy)
def test_several_requirements_are_anded(
    first: tuple[str, list[list[RefTerm]]],
    second: tuple[str, list[list[RefTerm]]],
    facts: cuda.Facts,
) -> None:
    result = cuda.check([first[0], second[0]], facts)
    assert result.satisfied == (reference(first[1], facts) and reference(second[1], facts))


@FEW
@given(st.lists(terms(), min_size=1, max_size=3))
def test_unknown_facts_are_assumed_true_like_the_runtime(group: list[RefTerm]) -> None:
    text = ",".join(f"{t.prop}{t.op}{t.value}" for t in group)
    evaluation = cuda.evaluate(text, cuda.Facts())
    assert evaluation.satisfied
    assert evaluation.assumed == tuple(text.split(","))


# --- edge cases read from libnvidia-container's dsl.c --------------------------------------


def test_empty_and_blank_requirements_are_satisfied() -> None:
    for text in ("", " ", "   ", ",", " , "):
        assert cuda.evaluate(text, H100).satisfied, text


def test_a_comma_only_group_keeps_the_previous_result() -> None:
    assert not cuda.evaluate("cuda>=99 ,", H100).satisfied
    # It also ends the evaluation: later alternatives are never tried.
    assert not cuda.evaluate("cuda>=99 , cuda>=1", H100).satisfied
    assert not cuda.evaluate("cuda>=99 ,, cuda>=1", H100).satisfied
    assert cuda.evaluate("cuda>=99 ,cuda>=1", H100).satisfied
    assert cuda.evaluate(", cuda>=99", H100).satisfied  # the first group already succeeded


def test_unknown_property_is_an_error_not_a_false_term() -> None:
    with pytest.raises(cuda.RequirementError) as error:
        cuda.evaluate("gpu>=1", H100)
    assert "gpu>=1" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_terms_the_runtime_never_reaches_are_not_checked() -> None:
    # The first group is satisfied, so the runtime never looks at the malformed second one...
    assert cuda.evaluate("cuda>=12 bogus", H100).satisfied
    # ...and a false term ends its group before the bad term.
    assert cuda.evaluate("cuda>=99,bogus=1 cuda>=12", H100).satisfied
    # The strict parser still names it.
    with pytest.raises(cuda.RequirementError, match="bogus"):
        cuda.parse_requirement("cuda>=12 bogus")


def test_properties_are_case_insensitive_and_brands_too() -> None:
    assert cuda.evaluate("CUDA>=12.4,DRIVER>=550", H100).satisfied
    assert cuda.evaluate("brand=TESLA", dataclasses.replace(H100, brand="Tesla")).satisfied
    assert not cuda.evaluate("brand!=tesla", dataclasses.replace(H100, brand="Tesla")).satisfied


def test_a_lone_bang_is_read_as_not_equal() -> None:
    assert str(cuda.parse_term("cuda!12")) == "cuda!=12"
    assert cuda.evaluate("cuda!12", H100).satisfied
    assert not cuda.evaluate("cuda!12.4", H100).satisfied


def test_only_spaces_separate_alternatives() -> None:
    with pytest.raises(cuda.RequirementError):
        cuda.evaluate("cuda>=99\tcuda>=1", H100)  # the tab is part of the value


@pytest.mark.parametrize(
    ("term", "why"),
    [
        (">=12", "no property"),
        ("cuda", "no operator"),
        ("cuda>=", "no value"),
        ("cuda==12", "unknown operator"),
        ("cuda=>12", "unknown operator"),
        ("cuda<>12", "unknown operator"),
        ("foo>=1", "unknown property"),
        ("cuda>=12.x", "not a version"),
        ("cuda>=.5", "not a version"),
        ("brand>=tesla", "brand can only be compared"),
        ("cuda>=1<2", "not a version"),
    ],
)
def test_malformed_terms_raise_naming_the_term(term: str, why: str) -> None:
    with pytest.raises(cuda.RequirementError) as error:
        cuda.parse_requirement(f"cuda>=11 {term}")
    assert error.value.term == term
    assert term in str(error.value) and why in str(error.value)


def test_brand_ordering_is_an_error_only_when_the_brand_is_known() -> None:
    assert cuda.evaluate("brand>=tesla", H100).satisfied  # no device brand: assumed
    with pytest.raises(cuda.RequirementError):
        cuda.evaluate("brand>=tesla", dataclasses.replace(H100, brand="Tesla"))


def test_the_runtime_message_quotes_the_first_group() -> None:
    evaluation = cuda.evaluate("cuda>=12.8 brand=tesla,driver>=535,driver<536", H100)
    assert not evaluation.satisfied
    assert evaluation.message == "unsatisfied condition: cuda>=12.8"
    assert evaluation.failed_terms == ("cuda>=12.8", "driver<536")


def test_non_strings_and_nul_are_refused() -> None:
    with pytest.raises(cuda.GrammarError):
        cuda.evaluate(None, H100)  # type: ignore[arg-type]
    with pytest.raises(cuda.GrammarError):
        cuda.evaluate("cuda>=1\0", H100)


# --- the image environment --------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda_version", "expected"),
    [
        ("12.8.1", "cuda>=12.8"),
        ("v12.8.1", "cuda>=12.8"),
        ("12", "cuda>=12.0"),
        ("12.8", "cuda>=12.8"),
        ("12.8.1-rc.1+build.7", "cuda>=12.8"),
        ("0.0.0", "cuda>=0.0"),
    ],
)
def test_legacy_cuda_version_follows_go_semver(cuda_version: str, expected: str) -> None:
    assert cuda.legacy_requirement(cuda_version) == expected


@pytest.mark.parametrize(
    "bad", ["12.08", "vv12.8", "12.8-rc1", "12.8.1.4", "4294967296.0", "x", "12.8.01", ""]
)
def test_invalid_cuda_version_fails_like_the_toolkit(bad: str) -> None:
    with pytest.raises(cuda.RequirementError, match="CUDA_VERSION"):
        cuda.legacy_requirement(bad)


@FEW
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 999))
def test_legacy_requirement_is_major_minor(major: int, minor: int, patch: int) -> None:
    assert cuda.legacy_requirement(f"{major}.{minor}.{patch}") == f"cuda>={major}.{minor}"


def test_requirements_from_env() -> None:
    env = {
        "CUDA_VERSION": "12.8.1",
        "NVIDIA_REQUIRE_CUDA": "cuda>=12.8",
        "NVIDIA_REQUIRE_DRIVER": "driver>=570",
        "NVIDIA_REQUIRE_JETPACK": "csv-mounts=all",
        "NVIDIA_REQUIRE_JETPACK_HOST_MOUNTS": "",
    }
    assert cuda.image_requirements(env) == ("cuda>=12.8", "driver>=570")
    # CUDA_VERSION alone (or with an empty NVIDIA_REQUIRE_CUDA) implies cuda>=major.minor.
    assert cuda.image_requirements({"CUDA_VERSION": "11.6.1"}) == ("cuda>=11.6",)
    assert cuda.image_requirements({"CUDA_VERSION": "11.6.1", "NVIDIA_REQUIRE_CUDA": ""}) == (
        "",
        "cuda>=11.6",
    )
    assert cuda.image_requirements({}) == ()


@pytest.mark.parametrize(
    ("value", "disabled"),
    [("true", True), ("1", True), ("T", True), ("True", True), ("TRUE", True),
     ("false", False), ("yes", False), ("", False), ("tRuE", False), (" true", False)],
)  # fmt: skip
def test_disable_require_reads_like_go_parsebool(value: str, disabled: bool) -> None:
    env = {"NVIDIA_DISABLE_REQUIRE": value, "NVIDIA_REQUIRE_CUDA": "cuda>=99"}
    assert cuda.disable_require(env) is disabled
    assert cuda.image_requirements(env) == (() if disabled else ("cuda>=99",))
    assert cuda.image_requirements(env, honour_disable=False) == ("cuda>=99",)


def test_env_lists() -> None:
    assert cuda.env_from_list(["A=1", "B=x=y", "A=2", "C="]) == {"A": "2", "B": "x=y", "C": ""}
    with pytest.raises(cuda.GrammarError, match="PATH"):
        cuda.env_from_list(["PATH"])


def test_required_cuda() -> None:
    requirement = "cuda>=12.8 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470"
    assert cuda.required_cuda([requirement]) == cuda.parse_version("12.8")
    assert cuda.required_cuda(["driver>=535", "cuda>=11.0", "cuda>12.2"]) == cuda.parse_version(
        "12.2"
    )
    assert cuda.required_cuda(["driver>=535"]) is None


# --- every real CUDA base image's environment ---------------------------------------------

ENTRIES = image_entries()


def test_the_fixture_is_complete() -> None:
    assert len(ENTRIES) == 651
    assert sum("NVIDIA_REQUIRE_CUDA" not in entry for entry in ENTRIES) >= 1  # legacy stages


RELEASES = sorted({str(entry["cuda_release"]) for entry in ENTRIES}, key=cuda.parse_version)


@pytest.mark.parametrize("release", RELEASES)
def test_real_image_requirements(release: str) -> None:
    """Every image stage of one CUDA release (all distros and architectures)."""
    stages = [entry for entry in ENTRIES if str(entry["cuda_release"]) == release]
    assert stages
    for entry in stages:
        _check_image(entry)


def _check_image(entry: dict[str, Any]) -> None:
    env = image_env(entry)
    requirements = cuda.image_requirements(env)
    if "CUDA_VERSION" not in env and "NVIDIA_REQUIRE_CUDA" not in env:
        # A real stage (11.6.1 ubi8 arm64) declares neither: the runtime checks nothing.
        assert requirements == ()
        assert cuda.required_cuda(requirements) is None
        assert cuda.check(requirements, cuda.Facts(cuda="1.0", driver="1")).satisfied
        return
    assert requirements, entry["tag"]
    groups = [
        group for requirement in requirements for group in cuda.parse_requirement(requirement)
    ]
    assert {term.name for group in groups for term in group} <= {"cuda", "driver", "brand"}
    release = cuda.parse_version(str(entry["cuda_release"]))
    wanted = cuda.required_cuda(requirements)
    assert wanted == release.major_minor, (entry["tag"], entry["docker_arch"])
    if "NVIDIA_REQUIRE_CUDA" not in entry:
        assert requirements == (f"cuda>={release.major}.{release.minor}",)

    # A driver that supports exactly that CUDA satisfies it.
    exact = cuda.Facts(cuda=str(wanted), driver="999.1", arch="9.0", brand="GeForce")
    assert cuda.check(requirements, exact).satisfied
    # Older drivers: the verdict is the reference model's, term for term.
    for facts in _older_nodes(wanted):
        expected = all(
            reference(
                [[_ref(term) for term in group] for group in cuda.parse_requirement(r)], facts
            )
            for r in requirements
        )
        assert cuda.check(requirements, facts).satisfied == expected, (entry["tag"], facts)


def _ref(term: cuda.Term) -> RefTerm:
    return RefTerm(term.prop, str(term.op), term.value)


def _older_nodes(wanted: cuda.Version) -> list[cuda.Facts]:
    below = _below(wanted)
    return [
        cuda.Facts(cuda=below, driver=driver, arch="8.0", brand=brand)
        for driver in ("535.104.12", "470.82.01", "418.43", "450.80.02")
        for brand in ("Tesla", "GeForce", "NvidiaRTX")
    ]


def _below(version: cuda.Version) -> str:
    if version.minor:
        return f"{version.major}.{version.minor - 1}"
    return f"{version.major - 1}.9"


def test_older_drivers_get_both_answers() -> None:
    # Guards the test above from passing vacuously: the compat branches really matter.
    outcomes = {
        cuda.check(cuda.image_requirements(image_env(entry)), facts).satisfied
        for entry in ENTRIES
        for facts in _older_nodes(cuda.parse_version(str(entry["cuda_release"])))
    }
    assert outcomes == {True, False}
    tesla_535 = cuda.Facts(cuda="12.2", driver="535.104.12", brand="Tesla")
    geforce_535 = dataclasses.replace(tesla_535, brand="GeForce")
    env = next(image_env(e) for e in ENTRIES if str(e["cuda_release"]) == "12.8.1")
    assert cuda.check(cuda.image_requirements(env), tesla_535).satisfied
    assert not cuda.check(cuda.image_requirements(env), geforce_535).satisfied


def test_the_common_datacenter_alternative_really_occurs() -> None:
    tesla_535 = [
        entry
        for entry in ENTRIES
        if "brand=tesla,driver>=535,driver<536" in entry.get("NVIDIA_REQUIRE_CUDA", "")
    ]
    assert len(tesla_535) > 100
