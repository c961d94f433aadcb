"""A ``muster run`` of a test suite's own, beside the session operator, never meeting it.

Some suites need flags the session operator does not have (``--insecure-registry`` for the
plain-HTTP test registry, ``--verifier-image``). Their webhook configurations get their own
name and a namespace selector of their own, so each namespace is judged by exactly one operator.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.app import localoperator, webhookconfigs
from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import scopes
from muster.platform import controlplane, kubesetup
from tests import peers

__all__ = [
    "SUITE_LABEL",
    "mode_selector",
    "suite_labels",
    "suite_operator",
    "suite_selector",
    "verifying_operator_fixture",
    "verifying_suite_operator",
]

SUITE_LABEL = "muster.dev/e2e"

Select = Callable[[dict[str, Any]], None]


def suite_labels(suite: str) -> dict[str, str]:
    """Labels of a namespace this suite's operator judges (in enforce mode) and the session
    operator leaves alone (it honours the opt-out label; the suite's operator does not)."""
    return {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true", SUITE_LABEL: suite}


def suite_selector(suite: str) -> Select:
    def select(hook: dict[str, Any]) -> None:
        expressions = hook["namespaceSelector"]["matchExpressions"]
        expressions[:] = [e for e in expressions if e["key"] != scopes.OPT_OUT_LABEL]
        expressions.append({"key": SUITE_LABEL, "operator": "In", "values": [suite]})

    return select


def mode_selector(label: str) -> Select:
    """Namespaces labelled ``label`` with the hook's mode (``enforce`` or ``warn``), in place of
    the real selector."""

    def select(hook: dict[str, Any]) -> None:
        mode = hook["clientConfig"]["url"].rsplit("/", 1)[-1]
        hook["namespaceSelector"] = {"matchLabels": {label: mode}}

    return select


@contextlib.contextmanager
def suite_operator(
    plane: controlplane.ControlPlane,
    *,
    configuration: str,
    own_namespace: str,
    workdir: Path,
    select: Select,
    extra_args: Sequence[str] = (),
    kubeconfig: Path | None = None,
    namespace_guard: namespaceguard.GuardSettings | None = None,
    timeout_seconds: int = 10,
) -> Iterator[localoperator.LocalOperator]:
    """``kubeconfig``: the identity the operator runs with (default: the plane's admin); the
    CRDs and webhook configurations are always put in place with the admin's.
    ``namespace_guard``: the mutating configuration records namespace mode changes too.
    ``timeout_seconds``: the webhooks' timeout, as the apiserver is told it."""
    localoperator.install_crds(plane)
    operator = localoperator.start(
        plane,
        own_namespace=own_namespace,
        workdir=workdir,
        extra_args=tuple(extra_args),
        kubeconfig=kubeconfig,
    )
    api = kubesetup.api_client(plane.kubeconfig)
    admission: Any = client.AdmissionregistrationV1Api(api)
    try:
        ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
        kubesetup.ensure_namespace(api, own_namespace)
        for built in (
            webhookconfigs.validating(
                operator.url,
                ca_bundle,
                own_namespace=own_namespace,
                timeout_seconds=timeout_seconds,
            ),
            webhookconfigs.mutating(
                operator.url,
                ca_bundle,
                own_namespace=own_namespace,
                timeout_seconds=timeout_seconds,
                namespace_guard=namespace_guard,
            ),
        ):
            manifest = copy.deepcopy(built)
            manifest["metadata"]["name"] = configuration
            for hook in manifest["webhooks"]:
                select(hook)
            kubesetup.apply_webhook_configuration(api, manifest)
        yield operator
    finally:
        for delete in (
            admission.delete_validating_webhook_configuration,
            admission.delete_mutating_webhook_configuration,
        ):
            with contextlib.suppress(client.ApiException):
                delete(configuration)
        api.close()
        operator.stop()
        print(f"--- muster run ({configuration}) log ---\n{operator.log.read_text()[-6000:]}")


def verifying_operator_fixture(suite: str, verifier_image: str) -> Any:
    """The package-scoped fixture ``<suite>_operator``: a ``muster run`` of the suite's own that
    reads the plain-HTTP test registry (``--insecure-registry``) and injects ``verifier_image``
    (``--verifier-image``).

    Its webhook configurations have their own names and select only namespaces labelled
    ``muster.dev/e2e=<suite>``; those namespaces also carry ``muster.dev/ignore=true`` so that
    the session operator's webhooks (which honour the opt-out label) leave them to this one."""

    @pytest.fixture(scope="package", name=f"{suite}_operator")
    def operator(
        control_plane: controlplane.ControlPlane,
        registry: peers.Registry,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[localoperator.LocalOperator]:
        with verifying_suite_operator(
            control_plane,
            suite,
            registry_host=registry.host,
            verifier_image=verifier_image,
            workdir=tmp_path_factory.mktemp(f"muster-{suite}-operator"),
        ) as started:
            yield started

    return operator


@contextlib.contextmanager
def verifying_suite_operator(
    plane: controlplane.ControlPlane,
    suite: str,
    *,
    registry_host: str,
    verifier_image: str,
    workdir: Path,
) -> Iterator[localoperator.LocalOperator]:
    """The operator of a suite whose gate injects verifying init containers (models, datasets):
    it reads the plain-HTTP test registry, injects ``verifier_image``, and reports on the pods of
    the suite's namespaces (revocations, drift) as its webhooks select them. Images no
    ImagePolicy covers (image volumes included) are tests/e2e/images/test_uncovered.py's."""
    with suite_operator(
        plane,
        configuration=f"muster.dev.{suite}-e2e",
        own_namespace=f"muster-{suite}-e2e",
        workdir=workdir,
        select=suite_selector(suite),
        extra_args=(
            f"--insecure-registry={registry_host}",
            f"--verifier-image={verifier_image}",
            "--uncovered-images=allow",
            "--namespace-selector=" + json.dumps({"matchLabels": {SUITE_LABEL: suite}}),
        ),
    ) as operator:
        yield operator
