"""Certificate rotation while serving: the serving files are rewritten under a running
``muster run`` (as cert-manager does), the server picks them up without a restart, and no
request that must be denied is admitted meanwhile.

A rotation done in this order (trust both CAs, then swap the files, then drop the old CA)
leaves no moment in which the apiserver distrusts what is served, so it costs no webhook
errors at all: :data:`MAX_WEBHOOK_ERRORS` says so, and a rotation that breaks calls fails."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client

from muster.app import localoperator, webhookconfigs
from muster.kernel import crds, pki
from muster.platform import controlplane, kubesetup
from tests import kubeclients
from tests.e2e.security.conftest import OWN_NAMESPACE, SELECT_LABEL, own

pytestmark = pytest.mark.e2e

UNPINNED = "registry.example/team/app:v1"
# The apiserver applies a changed caBundle through its informer within milliseconds; the test
# waits this long before the new certificate can be served, so no call meets a stale bundle.
CA_BUNDLE_PROPAGATION = 2.0
# Webhook calls the rotation may fail (each a denial, as the enforce failurePolicy is Fail).
MAX_WEBHOOK_ERRORS = 0
PINNED = "registry.example/team/app@sha256:" + "cd" * 32


def served_certificate(operator: localoperator.LocalOperator) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", operator.port), timeout=5)
    return x509.load_pem_x509_certificate(pem.encode())


@contextlib.contextmanager
def covered(plane: controlplane.ControlPlane, namespace: str) -> Iterator[None]:
    """The load's images covered by a static-pass ImagePolicy while it runs (uncovered images
    are denied), live before this returns: these tests are about the webhook, not signatures."""
    name = f"load-{uuid.uuid4().hex[:6]}"
    spec = {
        "images": ["registry.example/team/*"],
        "namespaceSelector": {"matchExpressions": [{"key": SELECT_LABEL, "operator": "Exists"}]},
        "authorities": [{"static": {"action": "pass"}}],
    }
    with kubeclients.admin(plane) as api:
        objects: Any = client.CustomObjectsApi(api)
        kubeclients.create_cluster_object(objects, "imagepolicies", "ImagePolicy", name, spec)
        try:
            core = client.CoreV1Api(api)
            deadline = time.monotonic() + 30
            while True:
                try:
                    body = kubeclients.pod(f"probe-{uuid.uuid4().hex[:6]}", PINNED)
                    core.create_namespaced_pod(namespace, body, dry_run="All")
                    break
                except client.ApiException as error:
                    assert time.monotonic() < deadline, f"the load's policy never took: {error}"
                    time.sleep(0.5)
            yield
        finally:
            objects.delete_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", name)


def set_ca_bundle(plane: controlplane.ControlPlane, url: str, bundle: bytes) -> None:
    encoded = base64.b64encode(bundle).decode("ascii")
    with contextlib.closing(kubesetup.api_client(plane.kubeconfig)) as api:
        for manifest in (
            webhookconfigs.validating(url, encoded, own_namespace=OWN_NAMESPACE),
            webhookconfigs.mutating(url, encoded, own_namespace=OWN_NAMESPACE),
        ):
            kubesetup.apply_webhook_configuration(api, own(manifest))


class Load:
    """A steady stream of pod creations (server-side dry runs) in a thread: must-deny and
    must-allow alternating."""

    def __init__(self, plane: controlplane.ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace
        self.sent = 0
        self.wrong_allows = 0
        self.denied_by_policy = 0
        self.webhook_errors = 0
        self.webhook_error_messages: list[str] = []
        self.allowed = 0
        self.other: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with kubeclients.admin(self.plane) as api:
            core = client.CoreV1Api(api)
            while not self._stop.is_set():
                for image, must_deny in ((UNPINNED, True), (PINNED, False)):
                    self.sent += 1
                    body = kubeclients.pod(f"l-{uuid.uuid4().hex[:8]}", image)
                    try:
                        # A server-side dry run goes through admission like a real create
                        # but stores nothing, so the load does not flood every controller.
                        core.create_namespaced_pod(self.namespace, body, dry_run="All")
                    except client.ApiException as error:
                        message = str(json.loads(error.body or "{}").get("message", error.reason))
                        if "not pinned by digest" in message:
                            self.denied_by_policy += 1
                        elif "failed calling webhook" in message:
                            self.webhook_errors += 1  # fail closed: also a denial
                            self.webhook_error_messages.append(message[:300])
                        else:
                            self.other.append(message[:200])
                        continue
                    if must_deny:
                        self.wrong_allows += 1
                    else:
                        self.allowed += 1
                time.sleep(0.1)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "allowed": self.allowed,
            "denied_by_policy": self.denied_by_policy,
            "webhook_errors": self.webhook_errors,
            "other": len(self.other),
            "wrong_allows": self.wrong_allows,
        }


def test_certificate_rotation_while_serving(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    operator = security_operator
    namespace = kubeclients.namespace(control_plane, "rotate", {SELECT_LABEL: "enforce"})
    before = served_certificate(operator)
    new_ca = pki.new_ca("muster-webhook-ca-rotated")
    serving = pki.issue(new_ca, "muster-webhook", hosts=["127.0.0.1", "localhost"], server=True)
    old_ca = operator.ca_file.read_bytes()
    with covered(control_plane, namespace), Load(control_plane, namespace) as load:
        time.sleep(1)
        # 1. Trust both CAs (the old one still serves), 2. swap the files atomically.
        set_ca_bundle(control_plane, operator.url, old_ca + new_ca.cert_pem)
        time.sleep(CA_BUNDLE_PROPAGATION)
        errors_before_swap = load.webhook_errors
        for target, data in (
            (operator.key_file, serving.key_pem),
            (operator.cert_file, serving.cert_pem),
        ):
            staged = Path(f"{target}.new")
            staged.write_bytes(data)
            staged.chmod(0o600)
            os.replace(staged, target)
        deadline = time.monotonic() + 40
        while served_certificate(operator).serial_number == before.serial_number:
            assert time.monotonic() < deadline, "the rotated certificate was never served"
            time.sleep(0.5)
        # 3. Drop the old CA: only the new certificate can be trusted now, and it works.
        set_ca_bundle(control_plane, operator.url, new_ca.cert_pem)
        time.sleep(3)
        served_after = load.allowed
        time.sleep(2)
    assert (
        served_certificate(operator).serial_number
        == x509.load_pem_x509_certificate(serving.cert_pem).serial_number
    )
    summary = load.summary()
    assert load.wrong_allows == 0, summary
    assert load.other == [], load.other
    assert load.allowed > served_after, "admission did not work with the new certificate only"
    # The load ran through the whole rotation, or "no errors" would mean nothing.
    assert load.denied_by_policy >= 10 and load.allowed >= 10, summary
    assert errors_before_swap == 0, load.webhook_error_messages
    assert load.webhook_errors <= MAX_WEBHOOK_ERRORS, (summary, load.webhook_error_messages)
    out = Path(tmp_path_factory.getbasetemp()) / "reliability-rotation.json"
    out.write_text(json.dumps({"faults": {"certificate-rotation": 1}, **summary}, indent=2))
    print(
        f"reliability: certificate rotation injected=1 requests={summary['requests']} "
        f"webhook_errors={summary['webhook_errors']} wrong_allows={summary['wrong_allows']}"
    )
