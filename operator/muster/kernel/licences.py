"""Licence policy: SPDX licence expressions judged against allow and deny lists.

Expressions are parsed and normalised by ``license-expression`` (the SPDX licence and exception
list it ships, ids matched case-insensitively and written in their canonical case, deprecated
ids such as ``GPL-2.0`` read as their replacement ``GPL-2.0-only``). Two things are decided here
rather than by the library, because its SPDX index carries ScanCode's own ids and aliases:

- only ids of the SPDX list are known; ScanCode's ``LicenseRef-scancode-*`` ids and the aliases
  that would read a user's ``LicenseRef-Apache`` as ``Apache-2.0`` are dropped, so a
  ``LicenseRef-<idstring>`` (or ``DocumentRef-<id>:LicenseRef-<id>``) is always its own licence,
  never silently another one; ``AdditionRef-<idstring>`` is a user-defined exception (SPDX 3);
- the boolean tree is evaluated here: ``A AND B`` is allowed when both are, ``A OR B`` when
  either is, ``X WITH E`` is judged as ``X`` and as ``X WITH E``, ``X+`` as ``X+`` and as ``X``.

A licence is refused when one of its names matches a ``deny`` pattern, or when ``allow`` is not
empty and none of its names matches an ``allow`` pattern; deny wins. Patterns are SPDX ids or
ids with ``*`` (``CC-BY-NC-*``), optionally ``<licence> WITH <exception>``; each must be able to
match some id, so a typo is an error when the policy is loaded, not a rule that never fires.
Everything here is pure.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import license_expression
import pydantic
from pydantic import alias_generators

__all__ = ["LicenceError", "LicencePolicy", "LicenceVerdict", "judge", "validate"]

MAX_LENGTH = 1024  # longer than any real licence expression; bounds parsing work
MAX_DEPTH = 16  # nested parentheses

_IDSTRING = r"[A-Za-z0-9.\-]+"
_REF = re.compile(rf"^(?:DocumentRef-{_IDSTRING}:)?LicenseRef-{_IDSTRING}$", re.IGNORECASE)
_ADDITION_REF = re.compile(rf"^AdditionRef-{_IDSTRING}$", re.IGNORECASE)
_OPERATORS = {"and", "or", "with"}
_SPECIAL = {"NONE", "NOASSERTION"}
_TOKENS = re.compile(r"[()\s]+")
_EMPTY_PARENTHESES = re.compile(r"\(\s*\)")
_LEADING_OPERATOR = re.compile(r"(?:^|\()\s*(AND|OR|WITH)(?=[\s(]|$)", re.IGNORECASE)
_PATTERN_PART = re.compile(r"^[A-Za-z0-9.\-:+*]+$")
_WITH = re.compile(r"\s+(?:WITH|with)\s+")
# license_expression's code for a plain licence (or an unknown id) where WITH needs an exception.
_PARSE_INVALID_EXCEPTION = license_expression.PARSE_INVALID_SYMBOL_AS_EXCEPTION


class LicenceError(ValueError):
    """A licence expression or pattern that is not valid SPDX; the message says what is wrong."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Known:
    """The SPDX list as ``license-expression`` ships it, without ScanCode's own ids."""

    symbols: tuple[Any, ...]  # license_expression.LicenseSymbol
    licences: Mapping[str, str]  # lower-case id or deprecated alias -> canonical id
    exceptions: Mapping[str, str]


@functools.cache
def _known() -> _Known:
    index = license_expression.get_spdx_licensing()
    symbols = []
    licences: dict[str, str] = {}
    exceptions: dict[str, str] = {}
    for symbol in set(index.known_symbols.values()):
        key = str(symbol.key)
        if key.lower().startswith("licenseref-"):
            continue
        aliases = tuple(
            str(a)
            for a in symbol.aliases
            if not str(a).lower().startswith("licenseref-") and " " not in str(a)
        )
        symbols.append(
            license_expression.LicenseSymbol(key, aliases, is_exception=symbol.is_exception)
        )
        names = exceptions if symbol.is_exception else licences
        for name in (key, *aliases):
            names[name.lower()] = key
    return _Known(tuple(symbols), licences, exceptions)


@functools.lru_cache(maxsize=16)  # bounded: AdditionRef names come from users' objects
def _licensing(additions: frozenset[str]) -> Any:
    """A parser that knows the SPDX list plus the ``AdditionRef-`` exceptions of one expression
    (the library reads an unknown symbol after WITH as an error)."""
    extra = [license_expression.LicenseSymbol(a, (), is_exception=True) for a in sorted(additions)]
    return license_expression.Licensing([*_known().symbols, *extra])


def _check_text(expression: str) -> None:
    if not expression.strip():
        raise LicenceError("the licence expression is empty")
    if len(expression) > MAX_LENGTH:
        raise LicenceError(f"the licence expression is longer than {MAX_LENGTH} characters")
    depth = 0
    for character in expression:
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth > MAX_DEPTH:
            raise LicenceError(
                f"the licence expression nests parentheses deeper than {MAX_DEPTH} levels"
            )
    if _EMPTY_PARENTHESES.search(expression):
        raise LicenceError(f"{expression!r}: empty parentheses hold no licence")
    if leading := _LEADING_OPERATOR.search(expression):
        raise LicenceError(f"{expression!r}: {leading.group(1)!r} has no licence on its left")
    for token in _TOKENS.split(expression):
        # SPDX: operators are all upper or all lower case ("AND", "and"), never "And".
        if token.lower() in _OPERATORS and token not in (token.lower(), token.upper()):
            raise LicenceError(
                f"{expression!r}: operator {token!r} must be written {token.upper()!r} "
                f"(or {token.lower()!r})"
            )


def _hint(name: str, names: Mapping[str, str]) -> str:
    """ " (did you mean 'X'?)" for a close canonical id, else nothing."""
    spelled = {v.lower(): v for v in names.values()}
    close = difflib.get_close_matches(name.lower(), list(spelled), n=1, cutoff=0.8)
    return f" (did you mean {spelled[close[0]]!r}?)" if close else ""


@dataclasses.dataclass(frozen=True, slots=True)
class _Parsed:
    tree: Any  # a license_expression expression
    licensing: Any
    text: str


@functools.lru_cache(maxsize=1024)
def _parse(expression: str) -> _Parsed:
    _check_text(expression)
    # One spelling per AdditionRef (ids match case-insensitively; the library refuses two
    # symbols that differ only in case).
    additions = {
        token.lower(): token
        for token in sorted(_TOKENS.split(expression), reverse=True)
        if _ADDITION_REF.match(token)
    }
    try:
        licensing = _licensing(frozenset(additions.values()))
        tree = licensing.parse(expression, validate=False, strict=True)
    except Exception as error:
        # Besides its own errors the library raises IndexError on empty parentheses and
        # AssertionError on "MIT OR (OR MIT)" (both found by fuzz/fuzz_licences.py): every
        # failure of the parser reads as a malformed expression.
        token = getattr(error, "token_string", None)
        if getattr(error, "error_code", None) == _PARSE_INVALID_EXCEPTION and token:
            known = _known()
            if token.lower() in known.licences:
                why = "is a licence, not an exception"
            else:
                why = f"is not an SPDX licence exception id{_hint(token, known.exceptions)}"
            raise LicenceError(
                f"{expression!r}: {token!r} after WITH {why}; use an exception of the SPDX "
                "list (https://spdx.org/licenses/exceptions-index.html) or AdditionRef-<name>"
            ) from None
        why = f": {error}" if isinstance(error, license_expression.ExpressionError) else ""
        raise LicenceError(f"{expression!r} is not a valid SPDX licence expression{why}") from None
    if tree is None:
        raise LicenceError("the licence expression is empty")
    if not _well_formed(tree, licensing):  # the library's own check is an assert (gone under -O)
        raise LicenceError(f"{expression!r} is not a valid SPDX licence expression")
    known = _known()
    for symbol in licensing.license_symbols(tree, decompose=True):
        if str(symbol.key).upper() in _SPECIAL:
            raise LicenceError(
                f"{expression!r}: {symbol.key} is an SPDX value for a missing licence, not a "
                "licence; leave the licence out when it is unknown"
            )
        name = str(symbol.key)
        if symbol.is_exception:
            continue  # the parser knows only listed exceptions and this expression's AdditionRefs
        if name.lower() in known.licences or _REF.match(name):
            continue
        if name.endswith("+") and name[:-1].lower() in known.licences:
            continue
        raise LicenceError(
            f"{expression!r}: {name!r} is not an SPDX licence id{_hint(name, known.licences)}; "
            "use an id of the SPDX licence list (https://spdx.org/licenses/), or "
            "LicenseRef-<name> for another licence"
        )
    return _Parsed(tree, licensing, _render(tree, licensing))


def _well_formed(node: Any, licensing: Any) -> bool:
    if isinstance(node, license_expression.LicenseWithExceptionSymbol):
        return True
    if isinstance(node, license_expression.LicenseSymbol):
        return not node.is_exception
    if isinstance(node, licensing.AND | licensing.OR):
        return len(node.args) >= 2 and all(_well_formed(a, licensing) for a in node.args)
    return False


def _name(symbol: Any) -> str:
    """A licence symbol in its canonical case (``X+`` included)."""
    key = str(symbol.key)
    known = _known().licences
    if key.endswith("+") and key[:-1].lower() in known:
        return known[key[:-1].lower()] + "+"
    return key


def _render(node: Any, licensing: Any) -> str:
    if isinstance(node, license_expression.LicenseWithExceptionSymbol):
        return f"{_name(node.license_symbol)} WITH {node.exception_symbol.key}"
    if isinstance(node, license_expression.LicenseSymbol):
        return _name(node)
    operator = " AND " if isinstance(node, licensing.AND) else " OR "
    parts = []
    for child in node.args:
        text = _render(child, licensing)
        compound = not isinstance(
            child, license_expression.LicenseSymbol | license_expression.LicenseWithExceptionSymbol
        )
        parts.append(f"({text})" if compound else text)
    return operator.join(parts)


def validate(expression: str) -> str:
    """The expression in normalised SPDX text; raises :class:`LicenceError` naming the problem."""
    return _parse(expression).text


# -- patterns ---------------------------------------------------------------------------------


def _pattern_part(part: str, *, exception: bool, pattern: str) -> str:
    known = _known()
    names = known.exceptions if exception else known.licences
    kind = "licence exception" if exception else "licence"
    if not _PATTERN_PART.match(part):
        raise LicenceError(
            f"pattern {pattern!r}: {part!r} may hold only letters, digits, '.', '-', ':', '+' "
            "and '*' (the only wildcard)"
        )
    ref = _ADDITION_REF if exception else _REF
    prefixes = ("additionref-",) if exception else ("licenseref-", "documentref-")
    if "*" not in part:
        if ref.match(part):
            return part
        if not exception and part.endswith("+") and part[:-1].lower() in names:
            return names[part[:-1].lower()] + "+"
        if part.lower() in names:
            return names[part.lower()]
        raise LicenceError(
            f"pattern {pattern!r}: {part!r} is not an SPDX {kind} id{_hint(part, names)}; "
            "use '*' for a "
            "pattern, e.g. 'CC-BY-NC-*'"
        )
    lowered = part.lower()
    if lowered.startswith(prefixes) or any(fnmatch.fnmatchcase(name, lowered) for name in names):
        return part
    hint = ""
    if not exception and any(fnmatch.fnmatchcase(n, lowered) for n in known.exceptions):
        hint = (
            "; exceptions are matched as '<licence> WITH <exception>', e.g. '* WITH " + part + "'"
        )
    raise LicenceError(f"pattern {pattern!r} matches no SPDX {kind} id{hint}")


def _check_pattern(pattern: str) -> str:
    text = pattern.strip()
    if not text:
        raise LicenceError("a licence pattern is empty")
    parts = _WITH.split(text)
    if len(parts) == 1:
        return _pattern_part(text, exception=False, pattern=pattern)
    if len(parts) == 2:
        licence = _pattern_part(parts[0], exception=False, pattern=pattern)
        return f"{licence} WITH {_pattern_part(parts[1], exception=True, pattern=pattern)}"
    raise LicenceError(f"pattern {pattern!r}: at most one WITH")


class LicencePolicy(pydantic.BaseModel):
    """Which licences are acceptable: SPDX ids or patterns with ``*``; deny wins over allow,
    and a non-empty allow list refuses every licence it does not name."""

    model_config = pydantic.ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        # Validators are built on first use: a command builds only those it validates with.
        defer_build=True,
    )

    allow: tuple[str, ...] = pydantic.Field(
        default=(),
        description="SPDX ids or patterns (e.g. Apache-2.0, MIT, CC-BY-4.0, BSD-*); when "
        "given, every licence must match one",
    )
    deny: tuple[str, ...] = pydantic.Field(
        default=(),
        description="SPDX ids or patterns refused, e.g. CC-BY-NC-*, "
        "'GPL-2.0-only WITH Classpath-exception-2.0'",
    )

    @pydantic.field_validator("allow", "deny")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_pattern(p) for p in value)

    @property
    def empty(self) -> bool:
        return not self.allow and not self.deny


@dataclasses.dataclass(frozen=True, slots=True)
class LicenceVerdict:
    """Why a licence expression is refused: the licence and the rule that refused it."""

    licence: str  # e.g. "CC-BY-NC-4.0"; "NOASSERTION" when none is declared
    rule: str  # e.g. "deny CC-BY-NC-*", "not in allow [Apache-2.0, MIT]"
    message: str


def _matches(pattern: str, names: Iterable[str]) -> bool:
    lowered = pattern.lower()
    with_pattern = " WITH " in pattern
    return any(
        (" WITH " in name) == with_pattern and fnmatch.fnmatchcase(name.lower(), lowered)
        for name in names
    )


def _names(symbol: Any) -> list[str]:
    """The names a licence is judged by: itself, ``X`` for ``X+`` and for ``X WITH E``."""
    if isinstance(symbol, license_expression.LicenseWithExceptionSymbol):
        base = _names(symbol.license_symbol)
        return [*base, f"{base[0]} WITH {symbol.exception_symbol.key}"]
    name = _name(symbol)
    return [name, name[:-1]] if name.endswith("+") else [name]


def _allow_rule(policy: LicencePolicy) -> str:
    return f"not in allow [{', '.join(policy.allow)}]"


@dataclasses.dataclass(frozen=True, slots=True)
class _Refused:
    licence: str
    rule: str
    detail: str


def _refused(node: Any, licensing: Any, policy: LicencePolicy) -> _Refused | None:
    if isinstance(
        node, license_expression.LicenseSymbol | license_expression.LicenseWithExceptionSymbol
    ):
        names = _names(node)
        shown = (
            names[-1]
            if isinstance(node, license_expression.LicenseWithExceptionSymbol)
            else names[0]
        )
        for pattern in policy.deny:
            if _matches(pattern, names):
                return _Refused(shown, f"deny {pattern}", f"{shown} matches deny {pattern}")
        if policy.allow and not any(_matches(p, names) for p in policy.allow):
            rule = _allow_rule(policy)
            return _Refused(shown, rule, f"{shown} is {rule}")
        return None
    refusals = [_refused(child, licensing, policy) for child in node.args]
    if isinstance(node, licensing.AND):
        return next((r for r in refusals if r is not None), None)
    if any(r is None for r in refusals):
        return None
    found = [r for r in refusals if r is not None]
    details = "; ".join(r.detail for r in found)
    return _Refused(
        found[0].licence,
        found[0].rule,
        f"no choice of ({_render(node, licensing)}) is allowed: {details}",
    )


def judge(expression: str | None, policy: LicencePolicy) -> LicenceVerdict | None:
    """Why ``expression`` is refused by ``policy``, or None when it is allowed.

    A missing licence is refused when ``allow`` is not empty; an expression that is not valid
    SPDX is refused by any policy that says something about licences (fails closed).
    """
    if policy.empty:
        return None
    if expression is None:
        if not policy.allow:
            return None
        rule = _allow_rule(policy)
        return LicenceVerdict("NOASSERTION", rule, f"no licence is declared, so it is {rule}")
    try:
        parsed = _parse(expression)
    except LicenceError as error:
        return LicenceVerdict(expression, "valid SPDX expression", str(error))
    refused = _refused(parsed.tree, parsed.licensing, policy)
    if refused is None:
        return None
    return LicenceVerdict(
        refused.licence, refused.rule, f"licence {parsed.text!r} is refused: {refused.detail}"
    )
