"""``muster run``: serve admission and run the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import pydantic

from muster.admission import areas as areas_
from muster.admission import server
from muster.app import areas, runtime
from muster.cli import common
from muster.kernel import credhelpers as helperrules
from muster.kernel import deadlines, scopes, selectors
from muster.platform import credhelpers, registries

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
        "--enforcement-scope",
        choices=[str(scope) for scope in scopes.Scope],
        default=os.environ.get("MUSTER_ENFORCEMENT_SCOPE", str(scopes.Scope.NAMESPACED)),
        help="namespaced: namespaces opt in with the muster.dev/enforce label; cluster: every "
        "namespace is judged in enforce mode (muster.dev/enforce=warn selects warn) except "
        "the excluded ones. Must match the webhooks' namespaceSelector (default namespaced)",
    )
    parser.add_argument(
        "--exclude-namespace",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="a namespace never judged, besides kube-system, kube-public, kube-node-lease and "
        "--namespace (repeatable; the chart passes webhook.excludeNamespaces)",
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
        "--registry-credentials",
        type=Path,
        default=None,
        metavar="FILE",
        help="operator-level registry credentials (a dockerconfigjson file, e.g. a mounted "
        "Secret), used for a registry when the pod's own pull secrets have none for it",
    )
    parser.add_argument(
        "--credential-helper",
        action="append",
        default=[],
        metavar="REGISTRY=NAME",
        help="ask docker-credential-NAME (on PATH) for credentials of REGISTRY, a host or a "
        "glob such as '*.dkr.ecr.*.amazonaws.com', when the pod's pull secrets have none for "
        "it; before --registry-credentials (repeatable)",
    )
    parser.add_argument(
        "--credential-helper-ttl",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long a credential helper's answer is used before the helper is asked again "
        "(sooner when the registry refuses it)",
    )
    parser.add_argument(
        "--registry-max-requests",
        type=int,
        default=registries.RegistrySettings.max_requests_per_registry,
        metavar="N",
        help="requests in flight to one registry at once; pods waiting for the same registry "
        "are served in turn (default: %(default)s)",
    )
    # -- untrusted references (egress) ------------------------------------------------
    parser.add_argument(
        "--registry-allow",
        action="append",
        default=[],
        metavar="GLOB",
        help="registry hosts Muster may contact, as globs on HOST or HOST:PORT (repeatable; "
        "default: any host not denied)",
    )
    parser.add_argument(
        "--registry-deny",
        action="append",
        default=[],
        metavar="GLOB",
        help="registry hosts Muster never contacts (repeatable; wins over --registry-allow)",
    )
    parser.add_argument(
        "--allow-private-registries",
        action="store_true",
        help="let registries resolve to loopback and reserved addresses (link-local and cloud "
        "metadata addresses stay refused unless the host is named exactly)",
    )
    parser.add_argument(
        "--refuse-private-networks",
        action="store_true",
        help="refuse registries on RFC 1918, IPv6 ULA and carrier-grade NAT addresses too "
        "(allowed by default: in-cluster registries live there)",
    )
    parser.add_argument(
        "--exemption-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="users in this group may use the muster.dev/exemption annotation (break-glass; "
        "repeatable; default: none, so no exemption is ever honoured)",
    )
    parser.add_argument(
        "--webhook-timeout",
        type=int,
        default=deadlines.DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="the timeoutSeconds of Muster's webhook configurations (1-30; the chart passes "
        "webhook.timeoutSeconds); the admission deadline is derived from it (default 10)",
    )
    parser.add_argument(
        "--admission-deadline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds the gates get per request; must be below --webhook-timeout (default: "
        "the timeout less max(1s, 20%%), so 8 for 10). Each request also stops in time for "
        "the time the apiserver says it has left",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
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
    parser.add_argument(
        "--namespace-selector",
        default=os.environ.get("MUSTER_NAMESPACE_SELECTOR") or None,
        metavar="JSON",
        help="label selector (JSON, as in a policy's namespaceSelector) of the opted-in "
        "namespaces whose running pods the controllers judge (drift, revocations), for "
        "webhooks that select namespaces otherwise; default: not labelled muster.dev/ignore=true",
    )
    for area in areas.AREAS:  # each area's own flags, in a group of its own
        if area.flags is not None:
            area.flags.add(parser)
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
    _check_registry_files(args.registry_ca_file, args.registry_credentials)
    if args.registry_max_requests < 1:
        raise common.CommandError("--registry-max-requests must be at least 1")
    helpers = _credential_helpers(args.credential_helper, args.credential_helper_ttl)
    namespace_selector = _namespace_selector(args.namespace_selector)
    try:
        enforcement = scopes.Enforcement.of(args.enforcement_scope, args.exclude_namespace)
    except ValueError:
        raise common.CommandError(
            f"--enforcement-scope {args.enforcement_scope!r} is not one of: "
            + ", ".join(scopes.Scope)
        ) from None
    admission_deadline = _admission_deadline(args.admission_deadline, args.webhook_timeout)
    settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(
            host=args.listen_address,
            port=args.port,
            tls=server.TLSFiles(Path(args.tls_cert_file), Path(args.tls_key_file)),
        ),
        own_namespace=args.namespace,
        enforcement=enforcement,
        admission_deadline=admission_deadline,
        registry=registries.RegistrySettings(
            insecure_registries=frozenset(args.insecure_registry),
            ca_file=args.registry_ca_file,
            credentials_file=args.registry_credentials,
            credential_helpers=helpers,
            credential_helper_ttl=args.credential_helper_ttl,
            max_requests_per_registry=args.registry_max_requests,
            allow_hosts=tuple(args.registry_allow),
            deny_hosts=tuple(args.registry_deny),
            allow_private=args.allow_private_registries,
            private_networks=not args.refuse_private_networks,
        ),
        kubeconfig=args.kubeconfig,
        peering=args.peering,
        priority=args.priority if args.priority is not None else secrets.randbelow(10_000) + 1,
        liveness_endpoint=args.liveness,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port or None,
        metrics_namespaces=frozenset(args.metrics_namespace) if args.metrics_namespace else None,
        metrics_max_namespaces=args.metrics_max_namespaces,
        exemption_groups=frozenset(args.exemption_group),
        namespace_selector=namespace_selector,
        **_area_settings(args),
    )
    try:
        asyncio.run(runtime.run(settings))
    except OSError as error:
        raise common.CommandError(f"cannot serve the webhook: {error}") from None
    return common.EXIT_OK


def _admission_deadline(deadline: float | None, webhook_timeout: int) -> float:
    """The deadline asked for, or the one derived from the webhook timeout; refused when the
    apiserver would stop waiting first (it would report a webhook error, not Muster's reason)."""
    try:
        if deadline is None:
            deadlines.check_timeout(webhook_timeout)
            return deadlines.admission_deadline(webhook_timeout)
        deadlines.check(deadline, webhook_timeout)
    except ValueError as error:
        raise common.CommandError(
            f"--admission-deadline / --webhook-timeout: {error}"
            + ("" if deadline is None else "; leave --admission-deadline out to derive it")
        ) from None
    return deadline


def _area_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings each area's own flags set (muster.admission.areas.Flags)."""
    found: dict[str, Any] = {}
    for area in areas.AREAS:
        if area.flags is None:
            continue
        try:
            found.update(area.flags.settings(args))
        except areas_.FlagError as error:
            raise common.CommandError(str(error)) from None
    return found


def _namespace_selector(text: str | None) -> selectors.LabelSelector | None:
    if text is None:
        return None
    try:
        return selectors.LabelSelector.model_validate_json(text)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise common.CommandError(
            f"--namespace-selector is not a label selector: {where + ': ' if where else ''}"
            f"{first.get('msg')}"
        ) from None


def _credential_helpers(rules: list[str], ttl: float) -> tuple[helperrules.HelperRule, ...]:
    """The ``--credential-helper`` rules, each helper on PATH; a usage error otherwise."""
    if not ttl > 0:
        raise common.CommandError(f"--credential-helper-ttl {ttl:g}: must be above 0 seconds")
    try:
        parsed = tuple(helperrules.parse_rule(rule) for rule in rules)
        credhelpers.check_rules(parsed)
    except ValueError as error:
        raise common.CommandError(f"--credential-helper: {error}") from None
    return parsed


def _check_registry_files(ca_file: Path | None, credentials_file: Path | None) -> None:
    """Refuse to start with a registry CA or credentials file that cannot be used."""
    try:
        registries.check_files(ca_file, credentials_file)
    except ValueError as error:
        raise common.CommandError(str(error)) from None
