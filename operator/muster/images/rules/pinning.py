"""The digest-pinning rule: an image named by a mutable tag can change under a running policy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from muster.kernel import findings, gates, pods, references, subjects

__all__ = ["CHECK", "PinningGate", "unpinned"]

CHECK = "digest-pinning"


def unpinned(
    uses: Iterable[pods.ImageUse], *, mode: findings.Mode = findings.Mode.ENFORCE
) -> Iterator[findings.Finding]:
    """A finding for every image use that is missing, malformed or not pinned by digest."""
    for use in uses:
        if not isinstance(use.image, str) or not use.image:
            yield findings.Finding(
                check=CHECK,
                reason="ImageMissing",
                subject=use.label,
                message="has no image",
                mode=mode,
            )
            continue
        try:
            reference = references.parse(use.image)
        except references.InvalidReference as error:
            yield findings.Finding(
                check=CHECK,
                reason="ImageReferenceInvalid",
                subject=use.label,
                message=f"image {use.image!r} is not a valid reference: {error}",
                mode=mode,
            )
            continue
        if not reference.pinned:
            yield findings.Finding(
                check=CHECK,
                reason="ImageNotPinned",
                subject=use.label,
                message=(
                    f"image {use.image!r} is not pinned by digest; "
                    f"refer to it as {use.image}@sha256:<digest> "
                    f"(crane digest {use.image} prints it)"
                ),
                mode=mode,
            )


class PinningGate:
    """Namespaces that opt in accept only images pinned by digest, in every pod template."""

    name = CHECK

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        if phase is not gates.Phase.VALIDATE:
            return gates.GateResult()
        found: list[findings.Finding] = []
        for template in subject.templates:
            containers = template.spec.get("containers")
            if not template.partial and (not isinstance(containers, list) or not containers):
                found.append(
                    findings.Finding(
                        check="pod-shape",
                        reason="PodSpecInvalid",
                        subject="pod" if subject.is_pod else f"pod template {template.pointer}",
                        message="has no containers to judge",
                    )
                )
                continue
            found.extend(unpinned(template.image_uses()))
        return gates.GateResult(findings=tuple(found))
