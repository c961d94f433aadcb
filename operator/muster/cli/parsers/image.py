"""``muster image``'s arguments; the command is in :mod:`muster.cli.image`."""

from __future__ import annotations

import argparse
from pathlib import Path

from muster.cli import common
from muster.images.rules import uncovered

__all__ = ["register"]


def register(subcommands: common.Subcommands) -> None:
    parser = subcommands.add_parser(
        "image",
        help="verify container image signatures against ImagePolicies",
        description="Image signatures (cosign legacy and Sigstore bundles), as admission does.",
    )
    actions = parser.add_subparsers(dest="image_command", metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="verify one image against ImagePolicy files",
        description="Exit 0 when verified, 1 when an enforcing policy rejects it, 2 on error.",
    )
    verify.add_argument("reference", metavar="REF", help="image reference (tag or digest)")
    verify.add_argument(
        "--policy",
        action="append",
        required=True,
        type=Path,
        metavar="FILE",
        help="ImagePolicy YAML file (repeatable)",
    )
    verify.add_argument(
        "--material",
        action="append",
        default=[],
        metavar="KIND/NAMESPACE/NAME/KEY=FILE",
        help="local file standing in for a Secret or ConfigMap key a policy names",
    )
    verify.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="registry spoken to over plain HTTP (repeatable)",
    )
    verify.add_argument("--registry-ca-file", type=Path, help="extra CA bundle for registries")
    verify.add_argument(
        "--uncovered-images",
        type=uncovered.Uncovered,
        choices=list(uncovered.Uncovered),
        default=uncovered.Uncovered.DENY,
        help="an image no given policy covers: deny (default, exit 1), warn or allow (exit 0)",
    )
    verify.add_argument(
        "--registry-credentials",
        type=Path,
        metavar="FILE",
        help="registry credentials as a Docker config / dockerconfigjson file",
    )
    common.add_format_option(verify)
    verify.set_defaults(handler=common.lazy("muster.cli.image", "verify_image"))
    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return common.EXIT_ERROR
