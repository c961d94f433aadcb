"""``muster run``: serve admission and run the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
from pathlib import Path

from muster.adapters import registries
from muster.cli import common
from muster.handlers import models, operator, webhooks

__all__ = ["register"]


def register(subcommands: common.Subcommands) -> None:
    parser = subcommands.add_parser(
        "run",
        help="run the operator and its admission webhook",
        description="Run the Muster operator and serve its admission webhooks over TLS.",
    )
    parser.add_argument(
        "--listen-address",
        default=os.environ.get("MUSTER_LISTEN_ADDRESS", "0.0.0.0"),  # noqa: S104
        help="address the webhook listens on (default 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("MUSTER_PORT", "9443")),
        help="webhook port (default 9443)",
    )
    parser.add_argument(
        "--tls-cert-file",
        type=Path,
        default=os.environ.get("MUSTER_TLS_CERT_FILE"),
        help="PEM certificate the webhook serves (reloaded when it changes)",
    )
    parser.add_argument(
        "--tls-key-file",
        type=Path,
        default=os.environ.get("MUSTER_TLS_KEY_FILE"),
        help="PEM private key of that certificate",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("MUSTER_NAMESPACE", "muster-system"),
        help="Muster's own namespace, never judged (default muster-system)",
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig to use (default: in-cluster or $KUBECONFIG)"
    )
    parser.add_argument(
        "--peering", default=None, help="kopf peering name: run controllers on one replica only"
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="kopf peering priority; the highest runs the controllers (default: random, so "
        "two replicas never tie and both run them)",
    )
    parser.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="registry spoken to over plain HTTP (development only; repeatable)",
    )
    parser.add_argument(
        "--registry-ca-file", type=Path, default=None, help="extra CA bundle for registries"
    )
    parser.add_argument(
        "--admission-deadline",
        type=float,
        default=8.0,
        help="seconds the gates get per request; keep it below the webhook timeout (default 8)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    # -- model gate --
    parser.add_argument(
        "--verifier-image",
        default=os.environ.get("MUSTER_VERIFIER_IMAGE", models.DEFAULT_VERIFIER_IMAGE),
        metavar="IMAGE",
        help="image of the init container that re-verifies model volumes on the node "
        "(Muster's own image; pin it by digest)",
    )
    parser.add_argument(
        "--evict-revoked-model-pods",
        action="store_true",
        help="evict running pods that use a revoked Model (default: Events and metrics only)",
    )
    # -- observability ------------------------------------------------------------------
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("MUSTER_METRICS_PORT", "8080")),
        help="port of the Prometheus endpoint /metrics (default 8080; 0 turns it off)",
    )
    parser.add_argument(
        "--metrics-address",
        default=os.environ.get("MUSTER_METRICS_ADDRESS", "0.0.0.0"),  # noqa: S104
        help="address the metrics endpoint listens on (default 0.0.0.0)",
    )
    parser.add_argument(
        "--metrics-namespace",
        action="append",
        default=None,
        metavar="NAMESPACE",
        help="a namespace named in metric labels (repeat); others are counted as 'other'. "
        "Default: the first --metrics-max-namespaces namespaces seen",
    )
    parser.add_argument(
        "--metrics-max-namespaces",
        type=int,
        default=100,
        metavar="N",
        help="without --metrics-namespace, how many namespaces get their own label (default 100)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        raise common.CommandError("--tls-cert-file and --tls-key-file go together")
    if args.tls_cert_file is None:
        raise common.CommandError(
            "the apiserver only calls webhooks over TLS: give --tls-cert-file and --tls-key-file"
        )
    for path in (args.tls_cert_file, args.tls_key_file):
        if not Path(path).is_file():
            raise common.CommandError(f"{path} does not exist or is not a file")
    if not 0 <= args.metrics_port <= 65535:
        raise common.CommandError(f"--metrics-port {args.metrics_port} is not a port (0-65535)")
    if args.metrics_max_namespaces < 0:
        raise common.CommandError("--metrics-max-namespaces must not be negative")
    settings = operator.OperatorSettings(
        webhook=webhooks.WebhookSettings(
            host=args.listen_address,
            port=args.port,
            tls=webhooks.TLSFiles(Path(args.tls_cert_file), Path(args.tls_key_file)),
        ),
        own_namespace=args.namespace,
        admission_deadline=args.admission_deadline,
        registry=registries.RegistrySettings(
            insecure_registries=frozenset(args.insecure_registry), ca_file=args.registry_ca_file
        ),
        kubeconfig=args.kubeconfig,
        peering=args.peering,
        priority=args.priority if args.priority is not None else secrets.randbelow(10_000) + 1,
        liveness_endpoint=args.liveness,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port or None,
        metrics_namespaces=frozenset(args.metrics_namespace) if args.metrics_namespace else None,
        metrics_max_namespaces=args.metrics_max_namespaces,
        model_verifier_image=args.verifier_image,
        evict_revoked_model_pods=args.evict_revoked_model_pods,
    )
    try:
        asyncio.run(operator.run(settings))
    except OSError as error:
        raise common.CommandError(f"cannot serve the webhook: {error}") from None
    return common.EXIT_OK
