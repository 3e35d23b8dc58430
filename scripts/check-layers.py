#!/usr/bin/env python3
"""Fails when two top-level modules of src/ depend on each other, directly or around a loop,
or when the code does not match the layer picture in the README's Layout section.

A dependency is any `crate::<module>` path in a module's files (a `use` line, an inline path
or a doc link), comments included: a doc link upward is a reach upward too. The picture is the
first code block after `## Layout`: one row per layer, top first, its modules before the first
run of two spaces; a module may use only modules on rows below its own. Prints the layers when
all holds.
Usage: python3 scripts/check-layers.py [SRC_DIR [README]]
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


def picture(readme):
    """The README's layer rows, top first: a list of module-name lists (None without one)."""
    with open(readme, encoding="utf-8") as file:
        text = file.read()
    match = re.search(r"^## Layout\n.*?^```\n(.*?)^```", text, re.M | re.S)
    if not match:
        return None
    rows = []
    for line in match.group(1).splitlines():
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        rows.append([name.strip() for name in names.split(",") if name.strip()])
    return rows


def picture_problems(graph, rows):
    """Each module that is not in the picture, or uses a module not below its own row."""
    row_of = {module: len(rows) - i for i, row in enumerate(rows) for module in row}
    problems = []
    for module in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if module not in row_of:
            problems.append(f"{module} is not in the README's layer picture")
    for module, targets in sorted(graph.items()):
        for target, place in sorted(targets.items()):
            if module in row_of and target in row_of and row_of[target] >= row_of[module]:
                problems.append(f"{module} uses {target}, which is not below it ({place})")
    return problems


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    readme = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(src) or ".", "README.md")
    graph = module_graph(src)
    cycle = find_cycle(graph)
    if cycle:
        print("dependency cycle between top-level modules of src/:", file=sys.stderr)
        for here, there in zip(cycle, cycle[1:]):
            print(f"  {here} -> {there}  ({graph[here][there]})", file=sys.stderr)
        return 1
    rows = picture(readme)
    if rows is None:
        print(f"{readme}: no layer picture (a code block after '## Layout')", file=sys.stderr)
        return 1
    problems = picture_problems(graph, rows)
    if problems:
        print(f"the code does not match the layer picture in {readme}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("module layers, top to bottom: " + " | ".join(", ".join(row) for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
