"""A read-only Kubernetes API over objects loaded from files, for judging offline.

``muster check --policy FILE`` builds the real admission gates on this instead of a cluster:
every gate reads its policies, namespaces, nodes, Secrets and ConfigMaps through
``KubeApi.get``, so the same gates, with the same messages, answer from files. Anything not
loaded is a 404, exactly as the cluster would answer for an object that does not exist; writes
are refused (gates never write).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from muster.platform import kubeapi, statechanges

__all__ = ["ObjectStore", "plural_of"]

_IRREGULAR = {"Endpoints": "endpoints"}


def plural_of(kind: str) -> str:
    """The resource name of a kind, as Kubernetes' default REST mapper forms it."""
    if kind in _IRREGULAR:
        return _IRREGULAR[kind]
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    return lower + "s"


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


class ObjectStore(kubeapi.KubeApi):
    """``get`` answers list and named reads from memory; namespaces may be defaulted."""

    def __init__(
        self,
        objects: Iterable[Mapping[str, Any]] = (),
        *,
        default_namespace_labels: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(kubeapi.Credentials(host="file:", ca_file=None))
        # (group, plural) -> namespace ("" for cluster-scoped) -> name -> object
        self._objects: dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]] = {}
        self.default_namespace_labels = (
            dict(default_namespace_labels) if default_namespace_labels is not None else None
        )
        for obj in objects:
            self.add(obj)

    def add(self, obj: Mapping[str, Any]) -> None:
        group, _ = _group_version(str(obj.get("apiVersion", "")))
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name") or "")
        key = (group, plural_of(str(obj.get("kind", ""))))
        namespace = "" if key == ("", "namespaces") else str(metadata.get("namespace") or "")
        self._objects.setdefault(key, {}).setdefault(namespace, {})[name] = copy.deepcopy(dict(obj))
        statechanges.changed()

    def namespace(self, name: str) -> dict[str, Any] | None:
        """The Namespace object loaded under ``name``, if any (a copy)."""
        found = self._objects.get(("", "namespaces"), {}).get("", {}).get(name)
        return copy.deepcopy(found) if found is not None else None

    async def close(self) -> None:
        return None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        del body, content_type
        if method != "GET":
            raise kubeapi.ApiError(405, f"{method} {path}: offline, nothing is written")
        statechanges.read()  # as a real API's answer may refill what the gates read
        parts = [part for part in path.split("?", 1)[0].split("/") if part]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, rest = parts[1], parts[3:]
        else:
            raise kubeapi.ApiError(404, f"{path}: not found")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            raise kubeapi.ApiError(404, f"{path}: not found")
        plural = rest[0]
        stored = self._objects.get((group, plural), {})
        if len(rest) == 2:
            found = stored.get(namespace, {}).get(rest[1])
            if found is None and (group, plural) == ("", "namespaces"):
                found = self._default_namespace(rest[1])
            if found is None:
                raise kubeapi.ApiError(404, f'{plural} "{rest[1]}" not found')
            return copy.deepcopy(found)
        scopes = [namespace] if namespace else sorted(stored)
        items = [
            copy.deepcopy(obj)
            for scope in scopes
            for _, obj in sorted(stored.get(scope, {}).items())
            if _selected(obj, (params or {}).get("labelSelector"))
        ]
        return {"kind": "List", "apiVersion": "v1", "items": items}

    def _default_namespace(self, name: str) -> dict[str, Any] | None:
        if self.default_namespace_labels is None:
            return None
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(self.default_namespace_labels)},
        }


def _selected(obj: Mapping[str, Any], selector: str | None) -> bool:
    """Equality-based label selectors (``a=b,c``), the only ones Muster's gates send."""
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        key, value = key.strip(), value.strip().lstrip("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True
