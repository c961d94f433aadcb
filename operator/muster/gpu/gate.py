"""The GPU pod gate: CUDA needs read from image configs, pods steered to compliant GPU nodes.

Only where a ``GPUStackPolicy`` object selects the namespace. MUTATE (enforce mode only) adds
required node affinity steering away from nodes judged bad (``muster.dev/gpu-stack NotIn
[non-compliant]``, see ``muster.gpu.rules.pods``), which a node that does not exist yet satisfies.
VALIDATE denies images whose environment defeats the runtime's checks (NVIDIAScape) or a CUDA
the policy excludes, warns when no node known now could run the pod, and denies a pod created
with ``spec.nodeName`` on a node that is not compliant or too old and a Binding (the
``pods/binding`` subresource: the scheduler's, or anyone's who bypasses it) to such a node, the
node read from the API when the binding arrives (it may have joined after the pod).

Where a ``GPUStackPolicy`` object selects the namespace, VALIDATE also denies a container that
requests no GPU yet sets ``NVIDIA_VISIBLE_DEVICES`` (its env, or its image config: read for
every such container, cached, under the admission deadline), see ``muster.gpu.rules.access``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from muster.gpu import imageenv as gpuimages
from muster.gpu import nodes as gpunodes
from muster.gpu.rules import access as gpuaccess
from muster.gpu.rules import pods as gpupods
from muster.gpu.rules import policies as gpupolicies
from muster.kernel import findings, gates, subjects
from muster.platform import kubeapi
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services

__all__ = ["GPUStackGate", "gates_for"]


class GPUStackGate:
    """Judges GPU pods (and workload templates) against the GPU stack policies and nodes."""

    name = gpupods.CHECK

    def __init__(
        self,
        index: gpunodes.GPUIndex,
        reader: gpuimages.ImageEnvReader,
        kube: kubeapi.KubeApi,
        namespaces: platformnamespaces.NamespaceIndex,
    ) -> None:
        self._index = index
        self._reader = reader
        self._kube = kube
        self._namespaces = namespaces  # the process's one, shared with the other gates

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        if subject.is_pod and subject.subresource == "binding":
            if phase is not gates.Phase.VALIDATE:
                return gates.GateResult()
            return gates.GateResult(findings=tuple(await self._binding(subject)))
        found: list[findings.Finding] = []
        patch: list[Mapping[str, Any]] = []
        for template in subject.templates:
            # A part a controller merges into its runtime's template (a TrainJob's trainer or
            # patches) may take GPU requests and images from the runtime, which Muster does not
            # see: its GPU access is judged on the pods it ends up in and nothing is added to
            # it; only a GPU request of its own, with images of its own, is placed here.
            if phase is gates.Phase.VALIDATE and not template.partial:
                found.extend(await self._unrequested_access(subject.namespace, template))
            if not gpupods.gpu_request(template.spec):
                continue
            if template.partial and (
                phase is gates.Phase.MUTATE
                or any(image is None for _, image in gpupods.gpu_containers(template.spec))
            ):
                continue
            policies = await self._policies(subject.namespace)
            if not policies:
                continue  # no GPUStackPolicy governs this namespace
            need, unreadable = await self._need(template)
            where = "pod" if subject.is_pod else f"pod template {template.pointer}"
            if phase is gates.Phase.MUTATE:
                if not unreadable and gpupods.steers(policies):
                    patch.extend(
                        gpupods.affinity_patch(
                            template, need.capability, gpupods.avoided_states(policies)
                        )
                    )
                continue
            found.extend(unreadable)
            placed, _ = gpupods.placement_findings(
                need, policies, self._index.known_nodes(), subject=where
            )
            found.extend(placed)
            node_name = template.spec.get("nodeName")
            if subject.is_pod and isinstance(node_name, str) and node_name:
                node = await self._index.fetch_node(node_name)
                found.extend(gpupods.node_findings(need, policies, node, node_name, subject=where))
        return gates.GateResult(findings=tuple(found), patch=tuple(patch))

    async def _policies(self, namespace: str) -> dict[str, gpupolicies.GPUStackPolicySpec]:
        await self._index.refresh()
        return gpupods.policies_for(
            self._index.effective_policies(), await self._namespaces.labels(namespace)
        )

    async def _unrequested_access(
        self, namespace: str, template: subjects.PodTemplate
    ) -> list[findings.Finding]:
        """Containers that request no GPU and reach GPUs through NVIDIA_VISIBLE_DEVICES."""
        candidates = gpuaccess.candidates(template.spec)
        if not candidates:
            return []
        policies = await self._policies(namespace)
        if not policies:
            return []
        # One read per image (several containers may share one); None: no image named.
        images = list(
            dict.fromkeys(c.image for c in candidates if gpuaccess.needs_image_env(c.container))
        )
        results = await asyncio.gather(*(self._env(i) for i in images), return_exceptions=True)
        envs = dict(zip(images, results, strict=True))
        found: list[findings.Finding] = []  # in the order of the containers
        for candidate in candidates:
            env: Mapping[str, str] | None = None
            if gpuaccess.needs_image_env(candidate.container):
                result = envs[candidate.image]
                if isinstance(result, gpuimages.ImageEnvError):
                    found.append(gpuaccess.unreadable_finding(candidate, str(result), policies))
                    continue
                if isinstance(result, BaseException):
                    raise result
                env = result
            item = gpuaccess.exposure(candidate, env)
            if item is not None:
                found.extend(gpuaccess.findings_for([item], policies))
        return found

    async def _need(
        self, template: subjects.PodTemplate
    ) -> tuple[gpupods.Need, list[findings.Finding]]:
        annotation = template.annotations.get(gpupods.REQUIREMENT_ANNOTATION)
        chosen = gpupods.gpu_containers(template.spec)
        results = await asyncio.gather(
            *(self._env(image) for _, image in chosen), return_exceptions=True
        )
        readable: list[tuple[str, str, Mapping[str, str]]] = []
        unreadable: list[findings.Finding] = []
        for (label, image), result in zip(chosen, results, strict=True):
            if isinstance(result, gpuimages.ImageEnvError):
                # With an explicit requirement the check still stands; the image's env
                # (LD_PRELOAD, NVIDIA_DISABLE_REQUIRE) could not be seen: say so.
                unreadable.append(
                    findings.Finding(
                        check=gpupods.CHECK,
                        reason="ImageConfigUnreadable",
                        subject=label,
                        message=f"{result}; its CUDA requirement cannot be checked"
                        if annotation is None
                        else f"{result}; its environment was not checked",
                        mode=findings.Mode.ENFORCE if annotation is None else findings.Mode.WARN,
                    )
                )
                if annotation is not None:
                    readable.append((label, image or "", {}))
            elif isinstance(result, BaseException):
                raise result
            else:
                readable.append((label, image or "", result))
        need = gpupods.need_from_envs(readable, annotation=annotation)
        return need, unreadable

    async def _env(self, image: str | None) -> dict[str, str]:
        if image is None:
            raise gpuimages.ImageEnvError("the container has no image")
        return await self._reader.env(image)

    async def _binding(self, subject: subjects.Subject) -> Sequence[findings.Finding]:
        target = subject.object.get("target")
        node_name = target.get("name") if isinstance(target, Mapping) else None
        pod_name = subject.name
        try:
            pod = await self._kube.get(f"/api/v1/namespaces/{subject.namespace}/pods/{pod_name}")
        except kubeapi.ApiError as error:
            if error.status == 404:
                return []  # the apiserver refuses binding a pod that does not exist
            raise
        template = subjects.PodTemplate(
            pointer="/spec", spec=pod.get("spec") or {}, metadata=pod.get("metadata") or {}
        )
        if not gpupods.gpu_request(template.spec):
            return []
        policies = await self._policies(subject.namespace)
        if not policies:
            return []
        label = f"binding of pod {pod_name}"
        if not isinstance(node_name, str) or not node_name:
            return [
                findings.Finding(
                    check=gpupods.CHECK,
                    reason="BindingInvalid",
                    subject=label,
                    message="names no target node",
                )
            ]
        need, unreadable = await self._need(template)
        return [
            *unreadable,
            *findings.attributed(need.problems, gpupods.deciding_policy(policies)),
            *gpupods.node_findings(
                need, policies, await self._index.fetch_node(node_name), node_name, subject=label
            ),
        ]


def gates_for(services: Services[object]) -> Sequence[gates.Gate]:
    """The GPU area's gates (``services`` is the operator's ``Services``)."""
    reader = gpuimages.ImageEnvReader(services.registries)
    metrics = services.metrics
    reader.cache_observer = lambda hit: metrics.cache_lookup("image-configs", hit=hit)
    return [
        GPUStackGate(
            gpunodes.index_for(services),
            reader,
            services.kube,
            platformnamespaces.index_for(services),
        )
    ]
