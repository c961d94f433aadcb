"""The GPU stack area's one registration: node compliance and GPU pod placement."""

from __future__ import annotations

from muster.admission import areas
from muster.gpu import gate, nodes
from muster.gpu.rules import pods, resources
from muster.kernel import crds

__all__ = ["AREA"]

AREA = areas.Area[object](
    name="gpu",
    checks=(pods.CHECK,),
    drift_checks=(pods.CHECK,),
    not_drift=frozenset({"ImageConfigUnreadable"}),
    drift_watches=((crds.GROUP, crds.VERSION, "gpustackpolicies"),),
    # The image configs the GPU gate reads (their CUDA requirements).
    caches=("image-configs",),
    resources=(resources.gpu_stack_policy,),
    gates=gate.gates_for,
    controllers=nodes.register,
    reasons={
        # GPU stack
        "NoCompliantNode": "no compliant GPU node can run the pod's CUDA requirement",
        "NodeNotCompliant": "a pod is placed on a GPU node that is not compliant",
        "NodeInsufficient": "a pod is placed on a compliant GPU node too old for its CUDA",
        "NodeUnknown": "a GPU pod is placed on a node Muster has not judged",
        "BindingInvalid": "a Binding names no target node",
        "CudaNotAllowed": "the CUDA version a workload needs is not on the policy's allowlist",
        "CudaVersionUnknown": "the policy allowlists CUDA versions and the workload declares none",
        "CudaRequirementInvalid": "a CUDA requirement (NVIDIA_REQUIRE_CUDA or annotation) is "
        "invalid",
        "ImageConfigUnreadable": "an image's config could not be read (a GPU image's CUDA "
        "requirement, or NVIDIA_VISIBLE_DEVICES where a GPUStackPolicy applies)",
        "GPUAccessNotRequested": "a container requesting no GPU sets NVIDIA_VISIBLE_DEVICES",
        "LdPreloadInGPUImage": "LD_PRELOAD in a GPU image's environment (NVIDIAScape)",
        "RequirementCheckDisabled": "NVIDIA_DISABLE_REQUIRE switches the runtime's CUDA check off",
        "GPUStackCompliant": "a node's GPU stack became compliant (on the Node)",
        "GPUStackNonCompliant": "a node's GPU stack is not compliant with policy (on the Node)",
        "GPUStackUnknown": "a node's GPU stack cannot be judged (on the Node)",
    },
)
