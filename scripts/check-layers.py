#!/usr/bin/env python3
"""Fails when two top-level modules of src/ depend on each other, directly or around a loop.

A dependency is any `crate::<module>` path in a module's files (a `use` line, an inline path
or a doc link), comments included: a doc link upward is a reach upward too. Prints the modules
bottom to top when there is no cycle, so `make test` shows the layering it checked.
Usage: python3 scripts/check-layers.py [SRC_DIR]
"""
import os
import re
import sys

ROOT_FILES = {"lib", "main"}  # the crate roots wire everything; they are above all modules


def module_graph(src):
    graph = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            top = os.path.relpath(path, src).split(os.sep)[0].removesuffix(".rs")
            if top in ROOT_FILES:
                continue
            with open(path, encoding="utf-8") as file:
                text = file.read()
            targets = graph.setdefault(top, {})
            for number, line in enumerate(text.splitlines(), 1):
                for target in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", line):
                    if target != top:
                        targets.setdefault(target, f"{os.path.relpath(path, src)}:{number}")
    return graph


def find_cycle(graph):
    """A list of modules forming a cycle, or None (depth-first search, colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layers(graph):
    """Modules grouped bottom to top: each depends only on modules of lower groups."""
    placed, result = {}, []
    remaining = set(graph) | {t for targets in graph.values() for t in targets}
    while remaining:
        level = sorted(m for m in remaining if all(t in placed for t in graph.get(m, {})))
        for module in level:
            placed[module] = len(result)
        result.append(level)
        remaining -= set(level)
    return result


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    graph = module_graph(src)
    cycle = find_cycle(graph)
    if cycle:
        print("dependency cycle between top-level modules of src/:", file=sys.stderr)
        for here, there in zip(cycle, cycle[1:]):
            print(f"  {here} -> {there}  ({graph[here][there]})", file=sys.stderr)
        return 1
    print("module layers, bottom to top: " + " | ".join(", ".join(l) for l in layers(graph)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
