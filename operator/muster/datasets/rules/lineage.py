"""A Dataset's lineage: the Datasets it was derived from, read from the index. Pure.

Lineage is a graph of names that anyone may write, so every walk here is iterative and keeps a
visited set: a cycle, a Dataset naming itself or a lineage thousands deep ends the walk with a
finding, never with a recursion error or a loop. Revocation flows down the graph: a Dataset is
tainted when it or any ancestor is revoked.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator
from typing import Literal

from muster.datasets.rules import registry

__all__ = ["Problem", "ancestors", "descendants", "diagnose", "problems", "revoked_through"]

ProblemKind = Literal["unregistered", "self-reference", "cycle", "missing", "invalid"]


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """Why a Dataset's lineage does not hold; ``kind`` picks the status condition's reason."""

    kind: ProblemKind
    text: str


def _parents(name: str, index: registry.DatasetIndex) -> tuple[str, ...]:
    entry = index.by_name(name)
    return () if entry is None else entry.spec.parents


def diagnose(name: str, index: registry.DatasetIndex) -> list[Problem]:
    """Everything wrong with ``name``'s lineage: itself unregistered or invalid, naming itself,
    a cycle it reaches, and each missing or invalid Dataset it names (directly or further up)."""
    if index.by_name(name) is None:
        why = index.invalid.get(f"Dataset/{name}")
        if why is not None:
            return [Problem("invalid", f"Dataset {name!r} is invalid: {why}")]
        return [Problem("unregistered", f"Dataset {name!r} is not registered")]
    found: list[Problem] = []
    if name in _parents(name, index):
        found.append(Problem("self-reference", f"Dataset {name!r} names itself as a parent"))
    cycle = _cycle(name, index)
    if cycle is not None:
        arrow = " -> ".join(cycle)
        if cycle[0] == name:
            found.append(Problem("cycle", f"lineage cycle: {arrow}"))
        else:
            found.append(Problem("cycle", f"lineage reaches a cycle: {arrow}"))
    for child, parent in _edges(name, index):
        if index.by_name(parent) is not None:
            continue
        where = f"parent {parent!r}" if child == name else f"ancestor {parent!r} (of {child!r})"
        why = index.invalid.get(f"Dataset/{parent}")
        if why is not None:
            found.append(Problem("invalid", f"{where} is invalid: {why}"))
        else:
            found.append(Problem("missing", f"{where} is not a registered Dataset"))
    return found


def problems(name: str, index: registry.DatasetIndex) -> list[str]:
    """What is wrong with ``name``'s lineage, as text (empty: it holds)."""
    return [problem.text for problem in diagnose(name, index)]


def ancestors(name: str, index: registry.DatasetIndex) -> list[str]:
    """Every Dataset name ``name`` derives from, nearest first (registered or not); never
    ``name`` itself, even through a cycle."""
    return [parent for _, parent in _edges(name, index) if parent != name]


def descendants(name: str, index: registry.DatasetIndex) -> set[str]:
    """Every registered Dataset derived from ``name``, directly or further down; not ``name``."""
    children: dict[str, list[str]] = collections.defaultdict(list)
    for entry in index.datasets.values():
        for parent in entry.spec.parents:
            children[parent].append(entry.name)
    seen = {name}
    queue = collections.deque([name])
    while queue:
        for child in children.get(queue.popleft(), ()):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    seen.discard(name)
    return seen


def revoked_through(name: str, index: registry.DatasetIndex) -> tuple[str, str] | None:
    """``(revoked Dataset, its reason)``: ``name`` itself when revoked, else its nearest revoked
    ancestor; None when neither it nor any registered ancestor is revoked."""
    for candidate in (name, *ancestors(name, index)):
        entry = index.by_name(candidate)
        if entry is not None and entry.spec.revoked:
            return candidate, entry.spec.revocation_reason or "no reason given"
    return None


def _edges(name: str, index: registry.DatasetIndex) -> Iterator[tuple[str, str]]:
    """(child, parent) for each parent first reached from ``name``, breadth first."""
    seen = {name}
    queue = collections.deque([name])
    while queue:
        child = queue.popleft()
        for parent in _parents(child, index):
            if parent in seen:
                continue
            seen.add(parent)
            queue.append(parent)
            yield child, parent


def _cycle(name: str, index: registry.DatasetIndex) -> list[str] | None:
    """One cycle reachable from ``name`` (its names, the first repeated at the end), else None.
    ``name`` naming itself is reported apart, as a self-reference."""
    path: list[str] = []
    on_path: dict[str, int] = {}
    done: set[str] = set()
    stack: list[tuple[str, Iterator[str]]] = []

    def enter(node: str) -> None:
        on_path[node] = len(path)
        path.append(node)
        stack.append((node, iter(_parents(node, index))))

    enter(name)
    while stack:
        node, parents = stack[-1]
        parent = next(parents, None)
        if parent is None:
            stack.pop()
            path.pop()
            del on_path[node]
            done.add(node)
        elif parent == name and node == name:
            continue
        elif parent in on_path:
            return [*path[on_path[parent] :], parent]
        elif parent not in done and index.by_name(parent) is not None:
            enter(parent)
    return None
