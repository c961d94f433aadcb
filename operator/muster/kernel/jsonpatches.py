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
