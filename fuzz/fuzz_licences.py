"""SPDX licence expressions and patterns: ``licences.validate``, ``licences.judge`` and
``LicencePolicy`` patterns.

Documented errors: ``licences.LicenceError`` (expressions) and pydantic's ``ValidationError``
(patterns). An accepted expression normalises to a fixed point, is judged the same as written and
normalised, and every policy decides it without raising; a policy denying ``*`` refuses every
expression, one allowing only ``*`` refuses none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]
import pydantic

with atheris.instrument_imports(include=["muster"]):
    from muster.kernel import licences

_SEEDS = (
    "Apache-2.0",
    "apache-2.0 AND cc-by-nc-4.0",
    "MIT OR (Apache-2.0 AND BSD-3-Clause)",
    "GPL-2.0-or-later WITH Classpath-exception-2.0",
    "GPL-2.0+",
    "Apache-2.0+ OR LicenseRef-llama3.1",
    "DocumentRef-spdx-tool-1.2:LicenseRef-MIT-Style-2",
    "GPL-2.0-only WITH AdditionRef-our-exception",
    "(MIT",
    "MIT Or Apache-2.0",
    "MIT OR MIT OR()",  # found by this harness: the library raised IndexError
    "MIT OR (OR (Apache-2.0 AND BSD-3-Clause)",  # and AssertionError
    "CC-BY-NC-*",
    "GPL-* WITH Classpath-*",
)
_POLICIES = (
    licences.LicencePolicy(allow=("Apache-2.0", "MIT", "CC-BY-*"), deny=("CC-BY-NC-*",)),
    licences.LicencePolicy(deny=("GPL-*", "* WITH Classpath-exception-2.0", "LicenseRef-*")),
)
_DENY_ALL = licences.LicencePolicy(deny=("*",))
_ALLOW_ALL = licences.LicencePolicy(allow=("*",))


def seeds() -> Iterator[bytes]:
    for text in _SEEDS:
        yield text.encode()


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    with contextlib.suppress(pydantic.ValidationError):
        licences.LicencePolicy(deny=(text,))
    try:
        normalised = licences.validate(text)
    except licences.LicenceError as error:
        _fuzzing.check(bool(str(error)), "LicenceError without a message")
        return
    _fuzzing.check(licences.validate(normalised) == normalised, f"{text!r} -> {normalised!r}")
    for policy in _POLICIES:
        written, again = licences.judge(text, policy), licences.judge(normalised, policy)
        _fuzzing.check(written == again, f"{text!r} judged unlike {normalised!r}")
    _fuzzing.check(licences.judge(text, _DENY_ALL) is not None, f"deny * allowed {text!r}")
    _fuzzing.check(licences.judge(text, _ALLOW_ALL) is None, f"allow * refused {text!r}")


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
