"""Registry requests reach the metrics through the RegistryClient's observer hook."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import parser

from muster.kernel import references
from muster.platform import metrics, processes, registries
from tests import peers

pytestmark = pytest.mark.integration


def counts(m: metrics.Metrics) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in parser.text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            if sample.name == "muster_registry_requests_total":
                found[(sample.labels["registry"], sample.labels["outcome"])] = sample.value
    return found


async def test_each_round_trip_is_counted_by_registry_and_outcome(
    registry: peers.Registry, tmp_path: Path
) -> None:
    peers.push_image(registry, "metrics/app", "v1", workdir=tmp_path)
    dead = f"127.0.0.1:{processes.free_port()}"  # nothing listens there
    m = metrics.Metrics()
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({registry.host, dead}), max_attempts=1
    )
    async with registries.RegistryClient(settings) as client:
        client.observer = m.registry_request
        await client.resolve(references.parse(f"{registry.host}/metrics/app:v1"))
        with pytest.raises(registries.NotFound):
            await client.resolve(references.parse(f"{registry.host}/metrics/app:missing"))
        with pytest.raises(registries.Unavailable):
            await client.resolve(references.parse(f"{dead}/metrics/app:v1"))
    found = counts(m)
    assert found[(registry.host, "success")] >= 1
    assert found[(registry.host, "not_found")] == 1
    assert found[(dead, "unreachable")] == 1
    durations = [
        sample
        for family in parser.text_string_to_metric_families(m.exposition().decode())
        for sample in family.samples
        if sample.name == "muster_registry_request_duration_seconds_count"
    ]
    assert sum(sample.value for sample in durations) == sum(found.values())
