"""Two ``muster run`` replicas behind one webhook configuration, one killed (SIGKILL) during a
steady load of pod creations.

The apiserver calls one URL, so a tiny TCP load balancer in this test stands in for the
Service: it spreads connections over the replicas and skips one that refuses (what kube-proxy
does once the endpoint is gone). TLS passes through it untouched. Both replicas serve admission;
kopf peering lets only the higher-priority one run the controllers. Requests in flight on the
killed replica fail closed (the enforce webhook's failurePolicy is Fail): never an allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from muster.app import localoperator
from muster.platform import controlplane, kubesetup
from tests import kubeclients, paths
from tests.e2e.security.conftest import OWN_NAMESPACE, SELECT_LABEL, register, unregister
from tests.e2e.security.test_rotation import Load, covered, set_ca_bundle

pytestmark = pytest.mark.e2e

PEERING = "muster-replicas-e2e"


class Balancer:
    """Round-robin TCP pass-through in its own thread."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = 0
        self.connections: dict[int, int] = dict.fromkeys(backends, 0)
        self.answered: dict[int, int] = dict.fromkeys(backends, 0)  # bytes each sent back
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Balancer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.connections[port] += 1
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer, answering=port),
                return_exceptions=True,
            )
            return
        writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answering: int | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if answering is not None:
                    self.answered[answering] += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@pytest.fixture(scope="module")
def replicas(
    control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[localoperator.LocalOperator]]:
    localoperator.install_crds(control_plane)
    crd = yaml.safe_load(
        (paths.REPO / "charts/muster/crds/clusterkopfpeerings.kopf.dev.yaml").read_text()
    )
    with contextlib.closing(kubesetup.api_client(control_plane.kubeconfig)) as api:
        kubesetup.apply_custom_resource_definition(api, crd)
        objects: Any = client.CustomObjectsApi(api)
        for _ in range(50):
            try:
                objects.create_cluster_custom_object(
                    "kopf.dev",
                    "v1",
                    "clusterkopfpeerings",
                    {
                        "apiVersion": "kopf.dev/v1",
                        "kind": "ClusterKopfPeering",
                        "metadata": {"name": PEERING},
                    },
                )
                break
            except client.ApiException as error:
                if error.status == 409:
                    break
                time.sleep(0.2)  # the CRD is being established
    started: list[localoperator.LocalOperator] = []
    try:
        for priority in (20, 10):
            started.append(
                localoperator.start(
                    control_plane,
                    own_namespace=OWN_NAMESPACE,
                    workdir=tmp_path_factory.mktemp(f"replica-{priority}"),
                    extra_args=(f"--peering={PEERING}", f"--priority={priority}"),
                )
            )
        yield started
    finally:
        unregister(control_plane)
        for operator in started:
            operator.stop()
            print(f"--- replica log ---\n{operator.log.read_text()[-2000:]}")


def test_killing_one_of_two_replicas_under_load_admits_nothing_wrong(
    control_plane: controlplane.ControlPlane,
    replicas: list[localoperator.LocalOperator],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    first, second = replicas  # priorities 20 and 10: the first runs the controllers
    namespace = kubeclients.namespace(control_plane, "replicas", {SELECT_LABEL: "enforce"})
    with Balancer([first.port, second.port]) as balancer:
        url = f"https://127.0.0.1:{balancer.port}"
        register(control_plane, first, url=url)
        set_ca_bundle(control_plane, url, first.ca_file.read_bytes() + second.ca_file.read_bytes())
        with covered(control_plane, namespace), Load(control_plane, namespace) as load:
            deadline = time.monotonic() + 30
            while load.allowed < 5:
                assert time.monotonic() < deadline, (load.summary(), balancer.connections)
                time.sleep(0.2)
            # The apiserver keeps its connection alive: kill the replica that is answering.
            victim = max(replicas, key=lambda r: balancer.connections[r.port])
            os.kill(victim.pid, signal.SIGKILL)  # no goodbye: in-flight requests just break
            killed_at = load.allowed
            answered_at_kill = dict(balancer.answered)
            deadline = time.monotonic() + 30
            while load.allowed < killed_at + 10:
                assert time.monotonic() < deadline, ("no failover", load.summary())
                time.sleep(0.2)
    summary = load.summary()
    assert load.wrong_allows == 0, summary
    survivor = next(r for r in replicas if r is not victim)
    # The survivor took over: it answered after the kill (both answered before it, so counting
    # its connections would prove nothing).
    assert balancer.answered[survivor.port] > answered_at_kill[survivor.port], balancer.answered
    assert load.other == [], load.other
    record = {"faults": {"replica-killed": 1}, **summary, "connections": balancer.connections}
    out = Path(tmp_path_factory.getbasetemp()) / "reliability-replicas.json"
    out.write_text(json.dumps({k: v for k, v in record.items() if k != "connections"}, indent=2))
    print(
        f"reliability: replica killed injected=1 requests={summary['requests']} "
        f"webhook_errors={summary['webhook_errors']} wrong_allows={summary['wrong_allows']}"
    )
