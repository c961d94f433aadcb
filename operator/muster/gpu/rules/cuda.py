"""CUDA and NVIDIA driver versions, and the ``NVIDIA_REQUIRE_CUDA`` grammar.

The grammar is evaluated exactly the way the NVIDIA container runtime does it, because that is
the check a pod meets when it starts: libnvidia-container's ``src/cli/dsl.c`` (``dsl_evaluate``,
``evaluate_rule``, ``dsl_compare_version``) with the rules of ``src/cli/configure.c``, fed by the
NVIDIA Container Toolkit's ``internal/config/image/cuda_image.go``. What that code does, and so
what this module does:

- The predicate is split on single spaces (only ``' '``; a tab is part of a term) into OR groups
  and each group on ``','`` into AND terms; empty pieces are skipped. Evaluation short-circuits:
  the first false term ends its group, the first all-true group ends the predicate. Terms that
  are never reached are never checked, so a malformed term after a satisfied group is harmless
  at runtime. An empty (or all-blank) predicate is satisfied.
- Quirk kept: a group made only of commas (``"cuda>=99 , cuda>=1"``) ends the evaluation with
  the previous group's result (here: unsatisfied; the last alternative is never tried).
- A term is ``property op value``: the property is everything before the first of ``<>=!``
  (empty -> invalid), the operator is the whole run of those characters and must be one of
  ``= != < <= > >=``; quirk kept: a lone ``!`` matches ``!=`` (``strncmp`` over the run length).
  An empty value is invalid. Properties are matched case-insensitively; an unknown property is
  an *error* ("invalid expression"), which fails the container, not a false term.
- ``cuda`` compares the highest CUDA version the driver supports, ``driver`` the kernel module
  version, ``arch`` the device compute capability (``9.0``), all as versions; ``brand`` compares
  strings case-insensitively and only with ``=``/``!=`` (others are errors). When the runtime has
  no value for a property (no device visible, no brand), the term is taken as true.
- Versions contain only digits and dots; parts compare numerically, runs of dots collapse,
  trailing zero parts are ignored (``12 == 12.0``); a leading dot or a part of 2**64-1 or more
  reached during comparison is an error.
- Every ``NVIDIA_REQUIRE_*`` variable except ``NVIDIA_REQUIRE_JETPACK*`` is one requirement; all
  must hold. With ``CUDA_VERSION`` set and ``NVIDIA_REQUIRE_CUDA`` empty or absent, the toolkit
  adds ``cuda>=major.minor`` (Go semver rules; an invalid ``CUDA_VERSION`` fails the container).
  ``NVIDIA_DISABLE_REQUIRE`` switches all of it off when Go's ``strconv.ParseBool`` reads true.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "MINOR_VERSION_MINIMUM_DRIVERS",
    "PROPERTIES",
    "TOOLKIT_MINIMUM_DRIVERS",
    "Check",
    "Compatibility",
    "Evaluation",
    "Facts",
    "GrammarError",
    "Op",
    "RequirementError",
    "Term",
    "Version",
    "VersionError",
    "check",
    "compare",
    "compatibility",
    "disable_require",
    "env_from_list",
    "evaluate",
    "highest_cuda_for_driver",
    "image_requirements",
    "legacy_requirement",
    "minimum_driver",
    "parse_requirement",
    "parse_term",
    "parse_version",
    "required_cuda",
]

_UINTMAX = 2**64 - 1  # strtoumax's overflow value, which dsl.c also treats as an error
_OP_CHARS = "<>=!"
_VERSION_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*", re.ASCII)


class GrammarError(ValueError):
    """Input that is not a version or requirement; the message names the bad part."""


class VersionError(GrammarError):
    """A string that is not a dotted numeric version."""


class RequirementError(GrammarError):
    """A requirement term the runtime would reject with "invalid expression"."""

    def __init__(self, term: str, why: str) -> None:
        super().__init__(f"invalid requirement term {term!r}: {why}")
        self.term = term
        self.why = why


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


# The order matters: it is the table dsl.c scans with strncmp (so "!" finds "!=").
_OPERATORS: tuple[Op, ...] = (Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE)

PROPERTIES = ("cuda", "driver", "arch", "brand")
_VERSION_PROPERTIES = frozenset({"cuda", "driver", "arch"})


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Version:
    """A dotted numeric version such as ``550.144.03`` or ``12.4``.

    ``text`` keeps the spelling (driver revisions keep their leading zeros: ``03``); equality,
    hashing and ordering follow the runtime: numeric parts, trailing zero parts ignored.
    """

    text: str
    parts: tuple[int, ...]

    @property
    def key(self) -> tuple[int, ...]:
        parts = self.parts
        end = len(parts)
        while end > 1 and parts[end - 1] == 0:
            end -= 1
        return parts[:end]

    @property
    def major(self) -> int:
        return self.parts[0]

    @property
    def minor(self) -> int:
        return self.parts[1] if len(self.parts) > 1 else 0

    @property
    def major_minor(self) -> Version:
        return Version(f"{self.major}.{self.minor}", (self.major, self.minor))

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __le__(self, other: Version) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Version) -> bool:
        return self.key > other.key

    def __ge__(self, other: Version) -> bool:
        return self.key >= other.key


def parse_version(text: str) -> Version:
    """A strict version: digits separated by single dots, each part below 2**64-1."""
    if not isinstance(text, str):
        raise VersionError(f"version must be a string, not {type(text).__name__}")
    if not _VERSION_RE.fullmatch(text):
        raise VersionError(f"{text!r} is not a version (digits separated by dots)")
    parts = tuple(int(part) for part in text.split("."))
    if any(part >= _UINTMAX for part in parts):
        raise VersionError(f"{text!r} has a part too large to compare")
    return Version(text, parts)


def _strtoumax(text: str, start: int) -> tuple[int, int]:
    """Digits from ``start``: (value, end); end == start when there are none."""
    end = start
    while end < len(text) and text[end].isdigit():
        end += 1
    if end == start:
        return 0, start
    return min(int(text[start:end]), _UINTMAX), end


def _skip(text: str, start: int, chars: str) -> int:
    while start < len(text) and text[start] in chars:
        start += 1
    return start


def _compare(left: str, op: Op, right: str) -> bool | None:
    """dsl_compare_version: the answer, or None where it returns -1 (an error)."""
    for text in (left, right):
        if any(ch not in "0123456789." for ch in text):
            return None
    i = j = 0
    while i < len(left) and j < len(right):
        n1, end1 = _strtoumax(left, i)
        if end1 == i or n1 == _UINTMAX:
            return None
        n2, end2 = _strtoumax(right, j)
        if end2 == j or n2 == _UINTMAX:
            return None
        if n1 != n2:
            if op is Op.EQ:
                return False
            if op is Op.NE:
                return True
            if op in (Op.LT, Op.LE):
                return n1 < n2
            return n1 > n2
        i = _skip(left, end1, ".")
        j = _skip(right, end2, ".")
    rest1 = _skip(left, i, ".0") < len(left)  # a non-zero part is left over
    rest2 = _skip(right, j, ".0") < len(right)
    if op is Op.NE:
        return rest1 or rest2
    if op in (Op.EQ, Op.LE, Op.GE) and not rest1 and not rest2:
        return True
    if op is Op.EQ:
        return False
    if op in (Op.LT, Op.LE):
        return not rest1 and rest2
    return rest1 and not rest2


def compare(left: str, op: Op | str, right: str) -> bool:
    """``left op right`` the way the runtime compares versions; what it rejects raises.

    ``left`` is the node's value (driver, CUDA or arch version), ``right`` the term's value.
    """
    answer = _compare(left, Op(op), right)
    if answer is None:
        raise VersionError(f"cannot compare {left!r} {op} {right!r}: not versions")
    return answer


@dataclasses.dataclass(frozen=True, slots=True)
class Term:
    """One ``property op value`` term as written (property kept in its original case)."""

    prop: str
    op: Op
    value: str

    @property
    def name(self) -> str:
        return _ascii_lower(self.prop)

    def __str__(self) -> str:
        return f"{self.prop}{self.op}{self.value}"


# Admission judges the same few image requirement strings on every GPU pod: parsing them is
# pure, so the terms are memoised (bounded; errors are not cached and raise every time).
@functools.lru_cache(maxsize=4096)
def _split_term(text: str) -> Term:
    """The syntax evaluate_rule accepts; the property name is not checked here."""
    n = next((k for k, ch in enumerate(text) if ch in _OP_CHARS), len(text))
    if n == 0:
        raise RequirementError(text, "no property before the operator")
    run_end = _skip(text, n, _OP_CHARS)
    if run_end == n:
        raise RequirementError(text, "no operator (one of = != < <= > >=)")
    run = text[n:run_end]
    # strncmp(run, op, len(run)) against a NUL-terminated op: the run must be op or a prefix
    # of it, first match in table order; only "!" (for "!=") is a proper prefix in practice.
    op = next((candidate for candidate in _OPERATORS if candidate.value.startswith(run)), None)
    if op is None:
        raise RequirementError(text, f"unknown operator {run!r}")
    value = text[run_end:]
    if not value:
        raise RequirementError(text, "no value after the operator")
    return Term(text[:n], op, value)


def parse_term(text: str) -> Term:
    """A term, checked strictly: syntax, known property, a value its property can compare."""
    term = _split_term(text)
    if term.name not in PROPERTIES:
        raise RequirementError(text, f"unknown property {term.prop!r} (cuda, driver, arch, brand)")
    if term.name in _VERSION_PROPERTIES:
        # What the runtime accepts when it compares: digits and dots, no leading dot.
        if term.value.startswith(".") or _compare(term.value, Op.EQ, term.value) is None:
            raise RequirementError(text, f"{term.value!r} is not a version")
    elif term.op not in (Op.EQ, Op.NE):
        raise RequirementError(text, "brand can only be compared with = or !=")
    return term


def _groups(predicate: str) -> list[list[str]]:
    return [
        [piece for piece in group.split(",") if piece] for group in predicate.split(" ") if group
    ]


def parse_requirement(predicate: str) -> tuple[tuple[Term, ...], ...]:
    """Every term of a requirement checked, OR groups of AND terms; malformed ones raise.

    Stricter than the runtime, which only notices a bad term when it reaches it: a policy
    engine should not bless a requirement that works by accident.
    """
    if not isinstance(predicate, str):
        raise GrammarError(f"requirement must be a string, not {type(predicate).__name__}")
    return _parsed_requirement(predicate)


@functools.lru_cache(maxsize=1024)
def _parsed_requirement(predicate: str) -> tuple[tuple[Term, ...], ...]:
    return tuple(
        tuple(parse_term(piece) for piece in group) for group in _groups(predicate) if group
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Facts:
    """What the runtime compares a requirement with; None where it would know nothing.

    ``cuda``: the highest CUDA version the driver supports (``12.4``); ``driver``: the kernel
    module version (``550.54.15``); ``arch``: the device compute capability (``9.0``);
    ``brand``: NVML's brand name (``Tesla``, ``GeForce``...).
    """

    cuda: str | None = None
    driver: str | None = None
    arch: str | None = None
    brand: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Evaluation:
    """One requirement judged against facts.

    ``message`` is what the runtime prints when it refuses (it always quotes the first OR
    group, whatever failed); ``matched`` is the AND group that satisfied it; ``assumed`` lists
    the terms taken as true only because a fact was unknown.
    """

    requirement: str
    satisfied: bool
    matched: tuple[str, ...] = ()
    failed_terms: tuple[str, ...] = ()
    assumed: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        if self.satisfied:
            return "satisfied"
        first = self.requirement.split(" ", 1)[0]
        return f"unsatisfied condition: {first}"


def _ascii_lower(text: str) -> str:
    """strcasecmp folds ASCII letters only."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _rule(term: Term, written: str, facts: Facts) -> bool | None:
    """The rule's answer, or None when the runtime has no value and assumes true."""
    name = term.name
    if name == "brand":
        if facts.brand is None:
            return None
        if term.op is Op.EQ:
            return _ascii_lower(facts.brand) == _ascii_lower(term.value)
        if term.op is Op.NE:
            return _ascii_lower(facts.brand) != _ascii_lower(term.value)
        raise RequirementError(written, "brand can only be compared with = or !=")
    have = {"cuda": facts.cuda, "driver": facts.driver, "arch": facts.arch}[name]
    if have is None:
        return None
    answer = _compare(have, term.op, term.value)
    if answer is None:
        raise RequirementError(written, f"cannot compare {have!r} with {term.value!r}")
    return answer


def evaluate(predicate: str, facts: Facts) -> Evaluation:
    """Judge one requirement exactly as the runtime does (errors as RequirementError)."""
    if not isinstance(predicate, str):
        raise GrammarError(f"requirement must be a string, not {type(predicate).__name__}")
    if "\0" in predicate:  # cannot reach the runtime: argv strings end at NUL
        raise GrammarError(f"requirement {predicate!r} contains a NUL character")
    # The runtime evaluates once per visible GPU; GFD labels describe a homogeneous node, so
    # one evaluation with node-level facts stands for all of them.
    result = True
    failed: list[str] = []
    for group in predicate.split(" "):
        if not group:
            continue
        group_assumed: list[str] = []
        finished = True
        matched: list[str] = []
        for piece in group.split(","):
            if not piece:
                continue
            term = _split_term(piece)
            if term.name not in PROPERTIES:
                raise RequirementError(piece, f"unknown property {term.prop!r}")
            answer = _rule(term, piece, facts)
            if answer is None:
                group_assumed.append(piece)
                answer = True
            result = answer
            if not answer:
                failed.append(piece)
                finished = False
                break
            matched.append(piece)
        if finished:
            if result:
                return Evaluation(
                    predicate, True, tuple(matched), tuple(failed), tuple(group_assumed)
                )
            break  # the comma-only group quirk: the earlier false result stands
    if result:
        return Evaluation(predicate, True, (), tuple(failed), ())
    return Evaluation(predicate, False, (), tuple(failed), ())


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """Several requirements (every ``NVIDIA_REQUIRE_*``), all of which must hold."""

    evaluations: tuple[Evaluation, ...]

    @property
    def satisfied(self) -> bool:
        return all(evaluation.satisfied for evaluation in self.evaluations)

    @property
    def assumed(self) -> tuple[str, ...]:
        return tuple(term for evaluation in self.evaluations for term in evaluation.assumed)


def check(requirements: Iterable[str], facts: Facts) -> Check:
    """Requirements in order, stopping at the first unsatisfied one like the runtime."""
    evaluations: list[Evaluation] = []
    for requirement in requirements:
        evaluation = evaluate(requirement, facts)
        evaluations.append(evaluation)
        if not evaluation.satisfied:
            break
    return Check(tuple(evaluations))


# --- image environment -------------------------------------------------------------------

_REQUIRE_PREFIX = "NVIDIA_REQUIRE_"
_JETPACK_PREFIX = "NVIDIA_REQUIRE_JETPACK"
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go strconv.ParseBool
_SEMVER_RE = re.compile(
    r"v(?P<major>0|[1-9][0-9]*)"
    r"(?:\.(?P<minor>0|[1-9][0-9]*)"
    r"(?:\.(?:0|[1-9][0-9]*)"
    r"(?:-(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
    r")?)?",
    re.ASCII,
)


def env_from_list(env: Sequence[str]) -> dict[str, str]:
    """An OCI ``Env`` list as a map; later entries win; an entry without ``=`` is an error."""
    result: dict[str, str] = {}
    for entry in env:
        name, sep, value = entry.partition("=")
        if not sep:
            raise GrammarError(f"invalid environment variable: {entry!r}")
        result[name] = value
    return result


def disable_require(env: Mapping[str, str]) -> bool:
    """``NVIDIA_DISABLE_REQUIRE`` read like Go's ParseBool; anything unparsable is false."""
    return env.get("NVIDIA_DISABLE_REQUIRE") in _TRUE


def legacy_requirement(cuda_version: str) -> str:
    """``cuda>=major.minor`` from ``CUDA_VERSION`` the way the toolkit derives it."""
    text = "v" + cuda_version.removeprefix("v")
    match = _SEMVER_RE.fullmatch(text)
    if match is None:
        raise RequirementError(f"CUDA_VERSION={cuda_version}", "not a valid semantic version")
    major = int(match["major"])
    minor = int(match["minor"] or "0")
    if major >= 2**32 or minor >= 2**32:  # strconv.ParseUint(..., 10, 32)
        raise RequirementError(f"CUDA_VERSION={cuda_version}", "version part out of range")
    return f"cuda>={major}.{minor}"


def image_requirements(env: Mapping[str, str], *, honour_disable: bool = True) -> tuple[str, ...]:
    """The requirements the toolkit passes to the runtime for an image's environment.

    Sorted by variable name (Go iterates a map, so the runtime's order is random; only which
    error is reported first could differ). Empty when ``NVIDIA_DISABLE_REQUIRE`` is true.
    """
    if honour_disable and disable_require(env):
        return ()
    requirements = [
        env[name]
        for name in sorted(env)
        if name.startswith(_REQUIRE_PREFIX) and not name.startswith(_JETPACK_PREFIX)
    ]
    cuda_version = env.get("CUDA_VERSION", "")
    if cuda_version and not env.get("NVIDIA_REQUIRE_CUDA", ""):
        requirements.append(legacy_requirement(cuda_version))
    return tuple(requirements)


def required_cuda(requirements: Iterable[str]) -> Version | None:
    """The CUDA version a workload asks for: the highest ``cuda>=``/``cuda>``/``cuda=`` bound.

    Images carry one (``cuda>=12.8``); the other groups are driver-branch alternatives.
    """
    best: Version | None = None
    for requirement in requirements:
        for group in parse_requirement(requirement):
            for term in group:
                if term.name == "cuda" and term.op in (Op.GE, Op.GT, Op.EQ):
                    value = parse_version(".".join(p for p in term.value.split(".") if p))
                    if best is None or value > best:
                        best = value
    return best


# --- compatibility -----------------------------------------------------------------------

# Minimum Linux driver each CUDA toolkit release needs without compatibility packages
# (NVIDIA CUDA Toolkit release notes, table 3).
TOOLKIT_MINIMUM_DRIVERS: Mapping[str, str] = {
    "12.0": "525.60.13",
    "12.2": "535.54.03",
    "12.4": "550.54.14",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
    "13.1": "590.44.01",
    "13.2": "595.45.04",
}

# Minor-version compatibility: any toolkit of a major runs (without PTX JIT of newer
# features) on a driver at least this new (NVIDIA CUDA compatibility guide).
MINOR_VERSION_MINIMUM_DRIVERS: Mapping[int, str] = {
    11: "450.80.02",
    12: "525",
    13: "580",
}

_TOOLKITS = sorted(
    (
        (parse_version(cuda), parse_version(driver))
        for cuda, driver in TOOLKIT_MINIMUM_DRIVERS.items()
    ),
    key=lambda pair: pair[0],
)


class Compatibility(enum.StrEnum):
    NATIVE = "native"  # the driver is at least the toolkit's own minimum
    MINOR_VERSION = "minor-version"  # works through CUDA minor-version compatibility
    INCOMPATIBLE = "incompatible"
    UNKNOWN = "unknown"  # a CUDA major this table does not cover


def minimum_driver(cuda_version: Version) -> Version | None:
    """The lowest driver known to run ``cuda_version`` natively (a listed toolkit at or above
    it stands in for an unlisted minor), or None past the table."""
    wanted = cuda_version.major_minor
    for toolkit, driver in _TOOLKITS:
        if toolkit >= wanted and toolkit.major == wanted.major:
            return driver
    return None


def compatibility(cuda_version: Version, driver: Version) -> Compatibility:
    """Whether a toolkit of ``cuda_version`` can run on ``driver``."""
    native = minimum_driver(cuda_version)
    if native is not None and driver >= native:
        return Compatibility.NATIVE
    floor = MINOR_VERSION_MINIMUM_DRIVERS.get(cuda_version.major)
    if floor is None:
        return Compatibility.UNKNOWN
    if driver >= parse_version(floor):
        return Compatibility.MINOR_VERSION
    return Compatibility.INCOMPATIBLE


def highest_cuda_for_driver(driver: Version) -> Version | None:
    """The newest listed toolkit this driver runs natively: a lower bound on what GFD reports
    as ``cuda.runtime-version`` (the table skips odd minors and newer releases)."""
    best: Version | None = None
    for toolkit, minimum in _TOOLKITS:
        if driver >= minimum:
            best = toolkit
    return best
