"""``muster model digest|verify|scan``: the model gate's checks on model bytes.

``digest`` prints the OpenSSF Model Signing root digest (the subject digest
``model_signing`` signs); ``verify`` checks a model against a digest or an OMS signature
(key, certificate chain, or Sigstore keyless); ``scan`` judges pickles, archives,
safetensors headers and Keras Lambda layers. The init container that re-verifies mounted
models on the node runs ``verify``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from muster.adapters import modelfiles, modelsigs
from muster.cli import common
from muster.core import oms

__all__ = ["register"]


def register(subcommands: common.Subcommands) -> None:
    model = subcommands.add_parser(
        "model",
        help="digest, verify and scan model files (OpenSSF Model Signing)",
        description="Check model bytes: OMS digests and signatures, unsafe serialization.",
    )
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    digest = actions.add_parser(
        "digest",
        help="print the OMS root digest (sha256:<hex>) of a model directory or file",
        description="Print the OpenSSF Model Signing root digest, the same digest "
        "model_signing signs (files serialization, SHA-256, git paths ignored).",
    )
    digest.add_argument("path", type=Path, metavar="PATH")
    digest.add_argument(
        "--ignore-paths",
        action="append",
        default=[],
        metavar="P",
        help="also ignore this path (as model_signing: relative to the working directory, "
        "or else to the model; repeatable)",
    )
    _add_workers(digest)
    common.add_format_option(digest)
    digest.set_defaults(handler=_digest)

    verify = actions.add_parser(
        "verify",
        help="verify a model against a digest or an OMS signature",
        description="Exit 0 when the model matches, 1 when it does not (changed, missing "
        "or extra file, bad signature), 2 on bad input.",
    )
    verify.add_argument("path", type=Path, metavar="PATH")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--digest", metavar="D", help="expected root digest, sha256:<hex>")
    source.add_argument("--signature", type=Path, metavar="FILE", help="OMS signature (model.sig)")
    verify.add_argument("--key", type=Path, metavar="PEM", help="public key of a key signature")
    verify.add_argument(
        "--certificate-chain",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="trusted CA certificates for a certificate signature (repeatable)",
    )
    verify.add_argument("--certificate-identity", metavar="ID", help="keyless signer identity")
    verify.add_argument(
        "--certificate-oidc-issuer", metavar="URL", help="keyless signer's OIDC issuer"
    )
    verify.add_argument(
        "--trusted-root",
        type=Path,
        metavar="FILE",
        help="Sigstore trusted root or client trust config (default: public-good Sigstore)",
    )
    verify.add_argument(
        "--ignore-paths",
        action="append",
        default=[],
        metavar="P",
        help="also ignore this path (as model_signing: relative to the working directory, "
        "or else to the model; repeatable)",
    )
    _add_workers(verify)
    common.add_format_option(verify)
    verify.set_defaults(handler=_verify)

    scan = actions.add_parser(
        "scan",
        help="find unsafe serialization: pickle imports, archives, safetensors, Keras Lambda",
        description="Exit 0 when every file is safe, 1 when one is unsafe, malformed or "
        "cannot be inspected, 2 on bad input.",
    )
    scan.add_argument("path", type=Path, metavar="PATH")
    scan.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="MODULE.NAME",
        help="add a global to the pickle import allowlist (repeatable)",
    )
    common.add_format_option(scan)
    scan.set_defaults(handler=_scan)


def _add_workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=modelfiles.DEFAULT_WORKERS,
        help=f"files hashed in parallel (default {modelfiles.DEFAULT_WORKERS})",
    )


def _digest(args: argparse.Namespace) -> int:
    try:
        manifest = modelfiles.measure(
            args.path,
            extra_ignores=modelfiles.ignore_paths_for(args.path, args.ignore_paths),
            workers=args.workers,
        )
    except modelfiles.ModelError as error:
        raise common.CommandError(str(error)) from None
    data = {
        "digest": manifest.digest,
        "model": manifest.model_name,
        "resources": [r.to_json() for r in manifest.resources],
    }
    common.emit(args, manifest.digest, data)
    return common.EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    try:
        if args.digest is not None:
            _refuse_signature_options(args)
            measured = modelfiles.measure(
                args.path,
                extra_ignores=modelfiles.ignore_paths_for(args.path, args.ignore_paths),
                workers=args.workers,
            )
            expected = oms.format_digest(oms.parse_digest(args.digest))
            outcome = modelfiles.Outcome(measured, expected)
        else:
            check = _signature_check(args)
            outcome = modelfiles.verify_signature(
                args.path,
                args.signature,
                check,
                extra_ignores=modelfiles.ignore_paths_for(args.path, args.ignore_paths),
                workers=args.workers,
            )
    except (modelfiles.ModelError, oms.OmsError, modelsigs.InputError) as error:
        raise common.CommandError(str(error)) from None
    except modelsigs.SignatureError as error:
        common.emit(args, f"FAIL {args.path}: {error}", {"passes": False, "error": str(error)})
        return common.EXIT_FAIL
    if outcome.passes:
        signer = f" signed by {outcome.signer}" if outcome.signer else ""
        common.emit(args, f"OK {args.path} {outcome.measured.digest}{signer}", outcome.to_json())
        return common.EXIT_OK
    lines = [d.message for d in outcome.differences] or [
        f"digest is {outcome.measured.digest}, expected {outcome.expected_digest}"
    ]
    text = f"FAIL {args.path}:\n" + "\n".join(f"  {line}" for line in lines)
    common.emit(args, text, outcome.to_json())
    return common.EXIT_FAIL


def _refuse_signature_options(args: argparse.Namespace) -> None:
    if args.key or args.certificate_chain or args.certificate_identity or args.trusted_root:
        raise common.CommandError("--digest takes no key, certificate or trusted-root options")


def _signature_check(args: argparse.Namespace) -> modelsigs.Check:
    keyless = args.certificate_identity or args.certificate_oidc_issuer
    chosen = [bool(args.key), bool(args.certificate_chain), bool(keyless)]
    if sum(chosen) != 1:
        raise common.CommandError(
            "--signature needs exactly one of --key, --certificate-chain, or "
            "--certificate-identity with --certificate-oidc-issuer"
        )
    if args.key:
        pem = _read(args.key, "public key")
        return lambda bundle: modelsigs.verify_with_key(bundle, pem)
    if args.certificate_chain:
        chain = b"".join(_read(path, "certificate chain") for path in args.certificate_chain)
        return lambda bundle: modelsigs.verify_with_certificates(bundle, chain)
    if not (args.certificate_identity and args.certificate_oidc_issuer):
        raise common.CommandError(
            "keyless verification needs both --certificate-identity and --certificate-oidc-issuer"
        )
    identity, issuer, root = (
        args.certificate_identity,
        args.certificate_oidc_issuer,
        args.trusted_root,
    )
    return lambda bundle: modelsigs.verify_with_sigstore(bundle, identity, issuer, root)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise common.CommandError(f"{path}: cannot read {what} ({error.strerror})") from None


def _scan(args: argparse.Namespace) -> int:
    # picklescan logs every finding itself; Muster reports them once, its own way.
    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    try:
        report = modelfiles.scan(args.path, allowed=args.allow)
    except modelfiles.ModelError as error:
        raise common.CommandError(str(error)) from None
    data = {"passes": report.passes, "files": [f.to_json() for f in report.files]}
    if report.passes:
        common.emit(args, f"OK {args.path}: {len(report.files)} file(s) scanned, none unsafe", data)
        return common.EXIT_OK
    lines = [f"  {f.kind.value}: {f.message}" for f in report.failures]
    common.emit(args, f"FAIL {args.path}:\n" + "\n".join(lines), data)
    return common.EXIT_FAIL
