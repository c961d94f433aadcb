"""``muster sigstore``: Sigstore verification from a terminal, CI, or the conformance suite.

``verify-bundle`` takes its arguments exactly as the sigstore-conformance client protocol passes
them (``docs/cli_protocol.md``), so the suite can run Muster beside other Sigstore clients::

    muster sigstore verify-bundle --bundle FILE \\
        (--certificate-identity ID --certificate-oidc-issuer URL | --key FILE) \\
        [--trusted-root FILE] FILE_OR_DIGEST

Without ``--trusted-root`` the Sigstore production (or, with ``--staging``, staging) trusted
root shipped inside the ``sigstore`` package is used as it is: nothing is fetched, so an
air-gapped machine verifies the same way; pass ``--trusted-root`` for a newer or private one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from muster.cli import common
from muster.signatures import shipped
from muster.signatures.rules import authorities, bundles, keys, proofs, trust

__all__ = ["register"]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024


def register(subcommands: common.Subcommands) -> None:
    parser = subcommands.add_parser(
        "sigstore",
        help="verify Sigstore bundles (speaks the sigstore-conformance client protocol)",
        description="Sigstore verification, offline, with an explicit or shipped trusted root.",
    )
    actions = parser.add_subparsers(dest="sigstore_command", metavar="ACTION")
    verify = actions.add_parser(
        "verify-bundle",
        help="verify a Sigstore bundle over a file or a sha256 digest",
        description="Exit 0 when the bundle verifies, 1 when it does not, 2 on bad input.",
    )
    verify.add_argument("--staging", action="store_true", help="use Sigstore staging trust")
    verify.add_argument("--bundle", required=True, type=Path, help="the Sigstore bundle")
    verify.add_argument("--certificate-identity", help="expected signer (certificate SAN)")
    verify.add_argument(
        "--certificate-identity-regexp", help="expected signer as a full-match regexp"
    )
    verify.add_argument("--certificate-oidc-issuer", help="expected OIDC issuer")
    verify.add_argument(
        "--certificate-oidc-issuer-regexp", help="expected OIDC issuer as a full-match regexp"
    )
    verify.add_argument("--key", type=Path, help="public key of a key-signed bundle")
    verify.add_argument(
        "--trusted-root", type=Path, help="trusted_root.json (default: the shipped one)"
    )
    verify.add_argument(
        "artifact", metavar="FILE_OR_DIGEST", help="the signed file, or sha256:<hex> of it"
    )
    common.add_format_option(verify)
    verify.set_defaults(handler=verify_bundle)
    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return common.EXIT_ERROR


def _read(path: Path, what: str, limit: int = bundles.MAX_BUNDLE_BYTES) -> bytes:
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as error:
        raise common.CommandError(f"cannot read {what} {path}: {error.strerror}") from None
    if len(data) > limit:
        raise common.CommandError(f"{what} {path} is larger than {limit} bytes")
    return data


def _artifact(text: str) -> bundles.Artifact:
    # The protocol: a digest only when it looks like one and is not a path on disk.
    if _DIGEST.match(text) and not Path(text).exists():
        return bundles.Artifact.from_digest(text)
    return bundles.Artifact.from_bytes(_read(Path(text), "artifact", MAX_ARTIFACT_BYTES))


def _trusted_root(args: argparse.Namespace) -> trust.TrustedRoot:
    if args.trusted_root is not None:
        data = _read(args.trusted_root, "trusted root")
    else:
        try:
            data = shipped.trusted_root(staging=bool(args.staging))
        except OSError as error:
            raise common.CommandError(f"shipped trusted root is unreadable: {error}") from None
    try:
        return trust.load_trusted_root(data)
    except trust.InvalidTrustRoot as error:
        raise common.CommandError(str(error)) from None


def _identities(args: argparse.Namespace) -> tuple[authorities.Identity, ...]:
    subject = (args.certificate_identity, args.certificate_identity_regexp)
    issuer = (args.certificate_oidc_issuer, args.certificate_oidc_issuer_regexp)
    if subject == (None, None) or issuer == (None, None):
        raise common.CommandError(
            "give --key, or both --certificate-identity and --certificate-oidc-issuer"
        )
    try:
        return (
            authorities.Identity(
                subject=subject[0],
                subject_regexp=subject[1],
                issuer=issuer[0],
                issuer_regexp=issuer[1],
            ),
        )
    except authorities.InvalidPolicy as error:
        raise common.CommandError(str(error)) from None


def verify_bundle(args: argparse.Namespace) -> int:
    keyless = any(
        value is not None
        for value in (
            args.certificate_identity,
            args.certificate_identity_regexp,
            args.certificate_oidc_issuer,
            args.certificate_oidc_issuer_regexp,
        )
    )
    if args.key is not None and keyless:
        raise common.CommandError("give either --key or a certificate identity, not both")
    key = identities = None
    if args.key is not None:
        try:
            key = keys.load(_read(args.key, "key"))
        except keys.InvalidKey as error:
            raise common.CommandError(f"key {args.key}: {error}") from None
    else:
        identities = _identities(args)
    try:
        artifact = _artifact(args.artifact)
    except ValueError as error:
        raise common.CommandError(str(error)) from None
    trusted_root = _trusted_root(args)
    bundle = _read(args.bundle, "bundle")
    try:
        verified = bundles.verify_artifact(
            bundle,
            artifact,
            identities=identities or (),
            key=key,
            trusted_root=trusted_root,
        )
    except proofs.Rejected as error:
        common.emit(
            args,
            f"FAIL: {args.artifact}: {error}",
            {"verified": False, "artifact": args.artifact, "reason": str(error)},
        )
        return common.EXIT_FAIL
    except authorities.InvalidPolicy as error:
        raise common.CommandError(str(error)) from None
    when = verified.integrated_time.isoformat() if verified.integrated_time else None
    common.emit(
        args,
        f"OK: {args.artifact}: signed by {verified.signer}" + (f", logged {when}" if when else ""),
        {
            "verified": True,
            "artifact": args.artifact,
            "digest": verified.digest,
            "signer": verified.signer,
            "integrated_time": when,
            "log_index": verified.log_index,
        },
    )
    return common.EXIT_OK
