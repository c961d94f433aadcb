"""Applying the JSON patches (RFC 6902) that Muster's own gates produce: add, replace, remove.

``muster check`` applies the mutation phase's patch before the validation phase, the way the
apiserver does between mutating and validating webhooks, so offline answers match admission.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["InvalidPatch", "apply"]


class InvalidPatch(ValueError):
    pass


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise InvalidPatch(f"JSON pointer {pointer!r} does not start with '/'")
    return [_unescape(token) for token in pointer[1:].split("/")]


def _index(part: str, size: int, *, appending: bool) -> int:
    if appending and part == "-":
        return size
    if not part.isdigit():
        raise InvalidPatch(f"{part!r} is not an array index")
    index = int(part)
    if index > size or (index == size and not appending):
        raise InvalidPatch(f"array index {index} is out of range")
    return index


def _step(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise InvalidPatch(f"no member {token!r}")
        return node[token]
    if isinstance(node, list):
        return node[_index(token, len(node), appending=False)]
    raise InvalidPatch(f"cannot descend into a {type(node).__name__} at {token!r}")


def apply(document: Mapping[str, Any], operations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A new document with ``operations`` applied; raises :class:`InvalidPatch`."""
    result: Any = copy.deepcopy(dict(document))
    for operation in operations:
        op = operation.get("op")
        tokens = _tokens(str(operation.get("path", "")))
        if not tokens:
            raise InvalidPatch("patching the whole document is not supported")
        parent = result
        for token in tokens[:-1]:
            parent = _step(parent, token)
        last = tokens[-1]
        value = copy.deepcopy(operation.get("value"))
        if op not in ("add", "replace", "remove"):
            raise InvalidPatch(f"unsupported operation {op!r}")
        if isinstance(parent, dict):
            if op != "add" and last not in parent:
                raise InvalidPatch(f"no member {last!r} to {op}")
            if op == "remove":
                del parent[last]
            else:
                parent[last] = value
        elif isinstance(parent, list):
            index = _index(last, len(parent), appending=op == "add")
            if op == "add":
                parent.insert(index, value)
            elif op == "replace":
                parent[index] = value
            else:
                del parent[index]
        else:
            raise InvalidPatch(f"cannot patch inside a {type(parent).__name__}")
    return dict(result)


# -- combining the patches of several gates -----------------------------------------------------

_MISSING: Any = object()


def combine(
    document: Mapping[str, Any], patches: Sequence[Sequence[Mapping[str, Any]]]
) -> list[Mapping[str, Any]]:
    """One patch with the effect of every gate's patch, each written against ``document``.

    Gates judge the same object concurrently, so their patches do not know of each other: two
    gates that each ``add /metadata/annotations`` to a pod without annotations, or each insert
    an init container at index 0, would clobber or shift each other if simply concatenated.
    Each patch is applied alone, the results are merged three ways against ``document`` (maps
    key by key, lists of named items such as containers name by name, anything else: the
    last gate's change wins), and the concatenation is kept only when it yields the same
    document; otherwise the merge is written as a patch of its own.
    """
    nonempty = [list(patch) for patch in patches if patch]
    concatenated = [operation for patch in nonempty for operation in patch]
    if len(nonempty) < 2:
        return concatenated
    try:
        results = [apply(document, patch) for patch in nonempty]
    except InvalidPatch:
        return concatenated  # a gate's own patch is broken: the apiserver says so
    merged = _merge(dict(document), results)
    try:
        if apply(document, concatenated) == merged:
            return concatenated
    except InvalidPatch:
        pass
    return list(_diff(dict(document), merged, ""))


def _merge(base: Any, variants: Sequence[Any]) -> Any:
    changed = [v for v in variants if v != base]
    if not changed:
        return base
    if all(v == changed[0] for v in changed):
        return changed[0]
    if all(isinstance(v, dict) for v in changed) and (base is _MISSING or isinstance(base, dict)):
        start = {} if base is _MISSING else base
        keys = list(start)
        for variant in changed:
            keys += [key for key in variant if key not in keys]
        result: dict[str, Any] = {}
        for key in keys:
            value = _merge(start.get(key, _MISSING), [v.get(key, _MISSING) for v in changed])
            if value is not _MISSING:
                result[key] = value
        return result
    if all(isinstance(v, list) for v in changed) and (base is _MISSING or isinstance(base, list)):
        named = _merge_named([] if base is _MISSING else base, changed)
        if named is not None:
            return named
    return changed[-1]


def _names(items: list[Any]) -> list[str] | None:
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        return None
    return [str(name) for name in names]


def _merge_named(base: list[Any], variants: Sequence[list[Any]]) -> list[Any] | None:
    """Lists whose items all have distinct names (containers, volumes): items merged by name,
    an item a gate added kept just before the original item that follows it in its list."""
    base_names = _names(base)
    if base_names is None or any(_names(variant) is None for variant in variants):
        return None
    before: dict[str | None, list[str]] = {}  # original item (None: the end) -> added before it
    versions: dict[str, list[Any]] = {}  # name -> the item in each list that holds it
    for variant in variants:
        pending: list[str] = []
        for item in variant:
            name = item["name"]
            versions.setdefault(name, []).append(item)
            if name in base_names:
                before.setdefault(name, []).extend(pending)
                pending = []
            else:
                pending.append(name)
        before.setdefault(None, []).extend(pending)
    result: list[Any] = []
    placed: set[str] = set()

    def place(name: str, original: Any) -> None:
        if name in placed:
            return
        placed.add(name)
        held = versions.get(name, [])
        if original is not _MISSING and len(held) < len(variants):
            return  # a gate removed it
        result.append(_merge(original, held))

    for item in base:
        for name in before.get(item["name"], ()):
            place(name, _MISSING)
        place(item["name"], item)
    for name in before.get(None, ()):
        place(name, _MISSING)
    return result


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _diff(before: Any, after: Any, pointer: str) -> list[Mapping[str, Any]]:
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        operations: list[Mapping[str, Any]] = []
        for key in before:
            if key not in after:
                operations.append({"op": "remove", "path": f"{pointer}/{_escape(key)}"})
        for key, value in after.items():
            path = f"{pointer}/{_escape(key)}"
            if key not in before:
                operations.append({"op": "add", "path": path, "value": value})
            else:
                operations.extend(_diff(before[key], value, path))
        return operations
    return [{"op": "replace", "path": pointer, "value": after}]
