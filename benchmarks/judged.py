"""The peers most parts of the suite measure against, started and stopped in one place.

A real control plane, Debian's docker-registry on loopback, and ``muster run`` with its
webhooks registered; one namespace opted in to enforcement and one that no webhook selects
(the baseline). Callers have put the repository root on ``sys.path`` (for ``tests.peers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests import peers

from muster.app import localoperator
from muster.kernel import scopes
from muster.platform import controlplane, kubesetup


@contextlib.contextmanager
def cluster(
    work: Path, own_namespace: str, judged: str, baseline: str
) -> Iterator[tuple[controlplane.ControlPlane, peers.Registry, localoperator.LocalOperator]]:
    """The control plane, the registry and the operator, all stopped on the way out."""
    plane = controlplane.start(work / "control-plane")
    operator = None
    (work / "registry").mkdir()
    try:
        with peers.registry(work / "registry") as registry:
            localoperator.install_crds(plane)
            operator = localoperator.start(
                plane,
                own_namespace=own_namespace,
                workdir=work / "operator",
                extra_args=(f"--insecure-registry={registry.host}",),
            )
            localoperator.register_webhooks(plane, operator, own_namespace=own_namespace)
            with kubesetup.api_client(plane.kubeconfig) as api:
                kubesetup.ensure_namespace(api, judged, {scopes.ENFORCE_LABEL: "true"})
                kubesetup.ensure_namespace(api, baseline)
            yield plane, registry, operator
    finally:
        if operator is not None:
            operator.stop()
        plane.stop()
