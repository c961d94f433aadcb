"""``muster model``'s arguments; the commands are in :mod:`muster.cli.model`."""

from __future__ import annotations

import argparse
from pathlib import Path

from muster.cli import common, progress
from muster.models.rules import defaults
from muster.signatures.rules import oms

__all__ = ["add_register_options", "add_workers", "register"]

_IMPLEMENTATION = "muster.cli.model"


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
        "model_signing signs (by default files serialization, SHA-256, git paths ignored).",
    )
    digest.add_argument("path", type=Path, metavar="PATH")
    _add_hashing(digest)
    _add_ignore_paths(digest)
    add_workers(digest)
    progress.add_option(digest)
    common.add_format_option(digest)
    digest.set_defaults(handler=common.lazy(_IMPLEMENTATION, "_digest"))

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
    source.add_argument(
        "--model",
        metavar="NAME",
        help="the cluster's Model NAME: its digest (and signature, when it has one); "
        "a revoked Model fails",
    )
    _add_hashing(verify, "; with --digest only: a signature or Model says how it was hashed")
    verify.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig for --model (default: $KUBECONFIG or ~/.kube/config)",
    )
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
    _add_ignore_paths(verify)
    verify.add_argument(
        "--provenance",
        type=Path,
        metavar="FILE",
        help="a Sigstore bundle with an in-toto statement (e.g. SLSA provenance) over the "
        "model's OMS digest, as cosign attest-blob --hash writes it; needs --provenance-key",
    )
    verify.add_argument(
        "--provenance-key", type=Path, metavar="PEM", help="public key that signed --provenance"
    )
    verify.add_argument(
        "--provenance-type",
        default=defaults.SLSA_V1,
        metavar="TYPE",
        help="its predicate type, or a cosign --type name (default: SLSA provenance v1)",
    )
    verify.add_argument(
        "--provenance-condition",
        action="append",
        default=[],
        metavar="CEL",
        help="a CEL condition over predicate, statement and now that must hold (repeatable)",
    )
    add_workers(verify)
    progress.add_option(verify)
    common.add_format_option(verify)
    verify.set_defaults(handler=common.lazy(_IMPLEMENTATION, "_verify"))

    register = actions.add_parser(
        "register",
        help="print a Model manifest for a model directory (reads model.sig beside it)",
        description="Measure the model and print a Model manifest (YAML) to review and apply. "
        "An OMS signature beside the model (PATH/../model.sig or PATH/model.sig, or --signature) "
        "is embedded after checking it signs this model; give --key or the keyless identity "
        "so the cluster can verify it.",
    )
    add_register_options(register, "Model")
    register.add_argument(
        "--oci-reference", metavar="REF", help="OCI image/artifact of the model, pinned by digest"
    )
    register.add_argument("--source", metavar="URI", help="e.g. hf://org/name@revision")
    register.add_argument("--license", metavar="SPDX", help="licence, e.g. apache-2.0")
    register.add_argument("--model-format", metavar="FORMAT", help="default: guessed from files")
    add_workers(register)
    progress.add_option(register)
    register.set_defaults(handler=common.lazy(_IMPLEMENTATION, "_register"))

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
    progress.add_option(scan)
    common.add_format_option(scan)
    scan.set_defaults(handler=common.lazy(_IMPLEMENTATION, "_scan"))


def _add_hashing(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument(
        "--hashing-algorithm",
        choices=tuple(oms.HASHING_ALGORITHMS),
        default=None,
        help="hash each file with this algorithm, as model_signing's hashing_algorithm "
        f"(default sha256){note}",
    )
    parser.add_argument(
        "--shard-size",
        type=_positive_int,
        default=None,
        metavar="BYTES",
        help="shard serialization: hash every file in shards of BYTES (model_signing's "
        f"default shard size is {oms.DEFAULT_SHARD_SIZE}); blake3 hashes whole files, as "
        f"model_signing does{note}",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def add_register_options(parser: argparse.ArgumentParser, kind: str) -> None:
    """What ``register`` of a Model and of a Dataset both take: the path measured, the
    manifest's name, and the signature beside it with what the cluster verifies it with."""
    parser.add_argument("path", type=Path, metavar="PATH")
    parser.add_argument("--name", required=True, help=f"the {kind}'s name")
    parser.add_argument("--signature", type=Path, metavar="FILE", help="OMS signature file")
    parser.add_argument("--key", type=Path, metavar="PEM", help="public key that signed it")
    parser.add_argument("--certificate-identity", metavar="ID", help="keyless signer identity")
    parser.add_argument(
        "--certificate-oidc-issuer", metavar="URL", help="keyless signer's OIDC issuer"
    )


def add_workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.DEFAULT_WORKERS,
        help=f"files hashed in parallel (default {defaults.DEFAULT_WORKERS})",
    )


def _add_ignore_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ignore-paths",
        action="append",
        default=[],
        metavar="P",
        help="also ignore this path (as model_signing: relative to the working directory, "
        "or else to the model; repeatable)",
    )
