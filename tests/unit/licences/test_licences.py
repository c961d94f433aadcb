"""SPDX licence expressions judged against allow and deny lists (muster.kernel.licences)."""

from __future__ import annotations

import pydantic
import pytest

from muster.kernel import licences
from muster.kernel.licences import LicenceError, LicencePolicy, judge, validate

pytestmark = pytest.mark.unit

NON_COMMERCIAL = LicencePolicy(deny=("CC-BY-NC-*",))
PERMISSIVE = LicencePolicy(allow=("Apache-2.0", "MIT", "CC-BY-4.0"), deny=("CC-BY-NC-*",))


@pytest.mark.parametrize(
    ("expression", "normalised"),
    [
        ("Apache-2.0", "Apache-2.0"),
        # SPDX: ids are matched case-insensitively and written in the list's case.
        ("apache-2.0 and cc-by-4.0", "Apache-2.0 AND CC-BY-4.0"),
        ("mit OR (apache-2.0 AND bsd-3-clause)", "MIT OR (Apache-2.0 AND BSD-3-Clause)"),
        (
            "gpl-2.0-or-later with classpath-exception-2.0",
            "GPL-2.0-or-later WITH Classpath-exception-2.0",
        ),
        # Deprecated ids read as their SPDX replacement.
        ("GPL-2.0", "GPL-2.0-only"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("Apache-2.0+", "Apache-2.0+"),
        # A user-defined licence is its own licence, never an alias of a listed one.
        ("LicenseRef-Apache", "LicenseRef-Apache"),
        (
            "DocumentRef-spdx-tool-1.2:LicenseRef-MIT-Style-2",
            "DocumentRef-spdx-tool-1.2:LicenseRef-MIT-Style-2",
        ),
        (
            "GPL-2.0-only WITH AdditionRef-our-linking-exception",
            "GPL-2.0-only WITH AdditionRef-our-linking-exception",
        ),
    ],
)
def test_valid_expressions_are_normalised(expression: str, normalised: str) -> None:
    assert validate(expression) == normalised


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Foo-1.0 OR MIT", "'Foo-1.0' is not an SPDX licence id"),
        ("Apach-2.0", "did you mean 'Apache-2.0'"),
        ("(MIT", "not a valid SPDX licence expression"),
        ("MIT)", "Unbalanced parenthesis"),
        ("MIT AND", "not a valid SPDX licence expression"),
        # Found by fuzz/fuzz_licences.py: the library raised IndexError on empty parentheses.
        ("MIT OR MIT OR()", "empty parentheses hold no licence"),
        ("( )", "empty parentheses"),
        # And AssertionError (an assert, gone under python -O) on an operator after "(".
        ("MIT OR (OR Apache-2.0)", "'OR' has no licence on its left"),
        ("AND MIT", "'AND' has no licence on its left"),
        ("MIT Apache-2.0", "not a valid SPDX licence expression"),
        ("MIT/Apache-2.0", "not a valid SPDX licence expression"),
        ("MIT WITH Apache-2.0", "'Apache-2.0' after WITH is a licence, not an exception"),
        (
            "GPL-2.0-only WITH Classpath-exceptio-2.0",
            "is not an SPDX licence exception id (did you mean 'Classpath-exception-2.0'?)",
        ),
        ("Classpath-exception-2.0", "can only be used as an exception"),
        ("MIT Or Apache-2.0", "operator 'Or' must be written 'OR'"),
        ("NOASSERTION", "missing licence"),
        ("(" * 20 + "MIT" + ")" * 20, "deeper than 16"),
        ("MIT OR " * 200 + "MIT", "longer than 1024"),
    ],
)
def test_malformed_expressions_say_what_is_wrong(expression: str, says: str) -> None:
    with pytest.raises(LicenceError) as raised:
        validate(expression)
    assert says in str(raised.value)


def test_a_conjunction_is_refused_when_one_licence_is_denied() -> None:
    verdict = judge("Apache-2.0 AND CC-BY-NC-4.0", NON_COMMERCIAL)
    assert verdict is not None
    assert (verdict.licence, verdict.rule) == ("CC-BY-NC-4.0", "deny CC-BY-NC-*")
    assert "CC-BY-NC-4.0 matches deny CC-BY-NC-*" in verdict.message
    assert "'Apache-2.0 AND CC-BY-NC-4.0'" in verdict.message


def test_a_choice_is_allowed_when_one_branch_is() -> None:
    assert judge("MIT OR CC-BY-NC-4.0", NON_COMMERCIAL) is None
    assert judge("MIT OR CC-BY-NC-4.0", PERMISSIVE) is None
    assert judge("cc-by-nc-4.0 or mit", PERMISSIVE) is None


def test_a_choice_with_no_allowed_branch_names_every_refusal() -> None:
    verdict = judge("CC-BY-NC-4.0 OR GPL-3.0-only", PERMISSIVE)
    assert verdict is not None
    assert (verdict.licence, verdict.rule) == ("CC-BY-NC-4.0", "deny CC-BY-NC-*")
    assert "CC-BY-NC-4.0 matches deny CC-BY-NC-*" in verdict.message
    assert "GPL-3.0-only is not in allow [Apache-2.0, MIT, CC-BY-4.0]" in verdict.message


def test_nested_expressions_are_evaluated_as_boolean() -> None:
    assert judge("MIT AND (CC-BY-NC-4.0 OR CC-BY-4.0)", PERMISSIVE) is None
    verdict = judge("(MIT OR CC-BY-NC-4.0) AND (GPL-3.0-only OR CC-BY-NC-SA-4.0)", PERMISSIVE)
    assert verdict is not None
    assert verdict.licence == "GPL-3.0-only"


def test_allow_lists_refuse_what_they_do_not_name() -> None:
    assert judge("Apache-2.0 AND MIT", PERMISSIVE) is None
    verdict = judge("Apache-2.0 AND BSD-3-Clause", PERMISSIVE)
    assert verdict is not None
    assert (verdict.licence, verdict.rule) == (
        "BSD-3-Clause",
        "not in allow [Apache-2.0, MIT, CC-BY-4.0]",
    )


def test_patterns_in_allow_lists() -> None:
    policy = LicencePolicy(allow=("BSD-*", "LicenseRef-acme-*"))
    assert judge("BSD-2-Clause OR LicenseRef-other", policy) is None
    assert judge("LicenseRef-acme-internal", policy) is None
    assert judge("LicenseRef-other", policy) is not None


def test_a_missing_licence_is_refused_only_by_allow_lists() -> None:
    assert judge(None, NON_COMMERCIAL) is None
    verdict = judge(None, PERMISSIVE)
    assert verdict is not None
    assert verdict.licence == "NOASSERTION"
    assert verdict.rule == "not in allow [Apache-2.0, MIT, CC-BY-4.0]"


def test_an_empty_policy_allows_everything() -> None:
    assert judge(None, LicencePolicy()) is None
    assert judge("CC-BY-NC-4.0", LicencePolicy()) is None


def test_a_malformed_expression_is_refused_by_any_licence_rule() -> None:
    verdict = judge("Foo-1.0", NON_COMMERCIAL)
    assert verdict is not None
    assert "not an SPDX licence id" in verdict.message


def test_one_addition_spelled_two_ways_is_one_exception() -> None:
    # Found by fuzz/fuzz_licences.py: the library refused two symbols differing in case.
    text = "MIT WITH AdditionRef-x OR Apache-2.0 WITH additionref-X"
    assert validate(text) == "MIT WITH AdditionRef-x OR Apache-2.0 WITH AdditionRef-x"


def test_user_defined_licences_are_not_read_as_listed_ones() -> None:
    # The library's index would read LicenseRef-Apache as Apache-2.0; here it stays itself.
    assert judge("LicenseRef-Apache", LicencePolicy(allow=("Apache-2.0",))) is not None
    assert judge("LicenseRef-Apache", LicencePolicy(deny=("LicenseRef-*",))) is not None


class TestExceptions:
    def test_a_licence_with_an_exception_is_judged_as_the_licence(self) -> None:
        policy = LicencePolicy(deny=("GPL-*",))
        verdict = judge("GPL-2.0-only WITH Classpath-exception-2.0", policy)
        assert verdict is not None
        assert verdict.licence == "GPL-2.0-only WITH Classpath-exception-2.0"
        assert verdict.rule == "deny GPL-*"
        assert (
            judge("GPL-2.0-only WITH Classpath-exception-2.0", LicencePolicy(allow=("GPL-*",)))
            is None
        )

    def test_an_allow_list_may_name_the_licence_with_its_exception(self) -> None:
        policy = LicencePolicy(allow=("GPL-2.0-only WITH Classpath-exception-2.0",))
        assert judge("gpl-2.0-only with classpath-exception-2.0", policy) is None
        assert judge("GPL-2.0-only", policy) is not None
        assert judge("GPL-2.0-only WITH LLVM-exception", policy) is not None

    def test_patterns_over_exceptions(self) -> None:
        policy = LicencePolicy(deny=("* WITH LLVM-exception",))
        assert judge("Apache-2.0 WITH LLVM-exception", policy) is not None
        assert judge("Apache-2.0", policy) is None
        assert judge("Apache-2.0 OR (MIT WITH LLVM-exception)", policy) is None


def test_or_later_is_judged_as_the_named_version_too() -> None:
    assert judge("Apache-2.0+", LicencePolicy(deny=("Apache-2.0",))) is not None
    assert judge("Apache-2.0+", LicencePolicy(allow=("Apache-2.0",))) is None


class TestPolicyPatterns:
    def test_ids_are_written_in_their_canonical_case(self) -> None:
        policy = LicencePolicy.model_validate({"allow": ["mit", "GPL-2.0"], "deny": ["cc-by-nc-*"]})
        assert policy.allow == ("MIT", "GPL-2.0-only")
        assert policy.deny == ("cc-by-nc-*",)
        assert judge("CC-BY-NC-SA-4.0", policy) is not None

    @pytest.mark.parametrize(
        ("pattern", "says"),
        [
            ("CC-BY-NCC-*", "pattern 'CC-BY-NCC-*' matches no SPDX licence id"),
            ("Apach-2.0", "'Apach-2.0' is not an SPDX licence id (did you mean 'Apache-2.0'?)"),
            ("CC-BY-NC", "'CC-BY-NC' is not an SPDX licence id"),
            ("*-exception-*", "exceptions are matched as '<licence> WITH <exception>'"),
            ("GPL-* WITH Foo-*", "matches no SPDX licence exception id"),
            ("MIT WITH Apache-2.0", "'Apache-2.0' is not an SPDX licence exception id"),
            ("GPL-?.0", "'*' (the only wildcard)"),
            ("", "empty"),
            ("A WITH B WITH C", "at most one WITH"),
        ],
    )
    def test_a_pattern_that_can_match_nothing_is_an_error(self, pattern: str, says: str) -> None:
        with pytest.raises(pydantic.ValidationError) as raised:
            LicencePolicy(deny=(pattern,))
        assert says in str(raised.value)

    def test_unknown_fields_are_refused(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            LicencePolicy.model_validate({"allowed": ["MIT"]})


def test_the_spdx_index_knows_no_scancode_ids() -> None:
    # LicenseRef-scancode-* ids are ScanCode's, not SPDX's: a pattern must not rely on them.
    assert not any(name.startswith("licenseref-") for name in licences._known().licences)
    assert "apache-2.0" in licences._known().licences
    assert "classpath-exception-2.0" in licences._known().exceptions
