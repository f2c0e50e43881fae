#!/usr/bin/env python3
"""Checks that the folder-level include graph of Bulkhead's C++ code has no cycle.

A folder is the directory of a source file (controller/server, enforcer/agent, policies).
Folder A depends on folder B when a .hpp/.cpp in A has `#include "..."` naming a file in B.
A cycle means neither folder can be built, read or tested without the other, so each
cycle is printed with the include lines that form it and the exit status is 1.

  scripts/check-include-cycles.py            check; print cycles, exit 1 if any
  scripts/check-include-cycles.py --dot      print the graph in Graphviz dot (cycle edges red)
  scripts/check-include-cycles.py --root DIR check another tree (the self-test uses this)
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import sys

# The project's own code. tests/ and bench/ sit on top of everything and may include any
# folder, so they are not part of the layering this check protects.
SCANNED_FOLDERS = ("controller", "enforcer", "policies", "common")
SOURCE_SUFFIXES = (".hpp", ".cpp")
INCLUDE_LINE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')

Include = collections.namedtuple("Include", "file line text")


def folder_of(path: pathlib.PurePosixPath) -> str:
    return str(path.parent)


def resolve(root: pathlib.Path, including: pathlib.Path, name: str) -> pathlib.PurePosixPath | None:
    """The included file, relative to root: beside the including file first (as the
    compiler looks for quoted includes), then from the project root (the project's style).
    None for a header outside the scanned folders (a system or third-party header)."""
    for candidate in (including.parent / name, root / name):
        if candidate.is_file():
            try:
                relative = candidate.resolve().relative_to(root.resolve())
            except ValueError:
                return None
            relative = pathlib.PurePosixPath(relative.as_posix())
            return relative if relative.parts[0] in SCANNED_FOLDERS else None
    # Not on disk (a header generated into the build tree): its spelled folder still
    # says which module it belongs to.
    spelled = pathlib.PurePosixPath(name)
    if len(spelled.parts) > 1 and spelled.parts[0] in SCANNED_FOLDERS:
        return spelled
    return None


def build_graph(root: pathlib.Path) -> tuple[set[str], dict[tuple[str, str], list[Include]]]:
    """Every folder holding source, and for every folder-to-folder dependency the include
    lines that make it (a folder including its own files is no dependency)."""
    folders: set[str] = set()
    edges: dict[tuple[str, str], list[Include]] = collections.defaultdict(list)
    for top in SCANNED_FOLDERS:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
                continue
            relative = pathlib.PurePosixPath(path.relative_to(root).as_posix())
            source_folder = folder_of(relative)
            folders.add(source_folder)
            text = path.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), start=1):
                match = INCLUDE_LINE.match(line)
                if not match:
                    continue
                target = resolve(root, path, match.group(1))
                if target is None:
                    continue
                target_folder = folder_of(target)
                if target_folder == source_folder:
                    continue
                folders.add(target_folder)
                edges[(source_folder, target_folder)].append(
                    Include(str(relative), number, line.strip()))
    return folders, edges


def strongly_connected_components(folders: set[str], successors: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (a deep tree must not hit Python's recursion limit)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(folders):
        if start in index:
            continue
        work = [(start, iter(sorted(successors.get(start, ()))))]
        index[start] = lowlink[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = lowlink[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    lowlink[node] = min(lowlink[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def shortest_path(successors: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])
            return list(reversed(path))
        for child in sorted(successors.get(node, ())):
            if child in within and child not in previous:
                previous[child] = node
                queue.append(child)
    return []


def find_cycles(folders: set[str], edges: dict[tuple[str, str], list[Include]]) -> list[list[str]]:
    """Cycles covering every edge that lies on one: for each such edge a -> b, the
    shortest way back from b to a. Each cycle is a folder list whose last element
    depends on the first."""
    successors: dict[str, set[str]] = collections.defaultdict(set)
    for source, target in edges:
        successors[source].add(target)
    cycles: list[list[str]] = []
    covered: set[tuple[str, str]] = set()
    for component in strongly_connected_components(folders, successors):
        if len(component) < 2:
            continue
        members = set(component)
        for source, target in sorted(edges):
            if source not in members or target not in members or (source, target) in covered:
                continue
            back = shortest_path(successors, target, source, members)
            cycle = [source] + back[:-1]
            # Start each cycle at its smallest folder so the same cycle prints the same way.
            smallest = cycle.index(min(cycle))
            cycle = cycle[smallest:] + cycle[:smallest]
            for i, folder in enumerate(cycle):
                covered.add((folder, cycle[(i + 1) % len(cycle)]))
            if cycle not in cycles:
                cycles.append(cycle)
    return cycles


def cycle_edges(cycles: list[list[str]]) -> set[tuple[str, str]]:
    return {(cycle[i], cycle[(i + 1) % len(cycle)]) for cycle in cycles for i in range(len(cycle))}


def print_cycles(cycles: list[list[str]], edges: dict[tuple[str, str], list[Include]], out) -> None:
    for cycle in cycles:
        print("include cycle: " + " -> ".join(cycle + [cycle[0]]), file=out)
        for i, source in enumerate(cycle):
            target = cycle[(i + 1) % len(cycle)]
            print(f"  {source} -> {target}:", file=out)
            for include in edges[(source, target)]:
                print(f"    {include.file}:{include.line}: {include.text}", file=out)


def print_dot(folders: set[str], edges: dict[tuple[str, str], list[Include]], cycles: list[list[str]]) -> None:
    on_cycle = cycle_edges(cycles)
    print("digraph includes {")
    print("  rankdir=LR;")
    print("  node [shape=box];")
    for folder in sorted(folders):
        print(f'  "{folder}";')
    for (source, target), includes in sorted(edges.items()):
        colour = ", color=red, fontcolor=red" if (source, target) in on_cycle else ""
        print(f'  "{source}" -> "{target}" [label="{len(includes)}"{colour}];')
    print("}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent,
                        help="the source tree (default: this checkout)")
    parser.add_argument("--dot", action="store_true",
                        help="print the folder graph in Graphviz dot on stdout (cycles still go to "
                             "stderr and still fail)")
    args = parser.parse_args()

    folders, edges = build_graph(args.root)
    if not folders:
        print(f"check-include-cycles: no .hpp/.cpp under {', '.join(SCANNED_FOLDERS)} in {args.root}",
              file=sys.stderr)
        return 2
    cycles = find_cycles(folders, edges)
    if args.dot:
        print_dot(folders, edges, cycles)
        print_cycles(cycles, edges, sys.stderr)
    else:
        print_cycles(cycles, edges, sys.stdout)
        print(f"{len(folders)} folders, {len(edges)} folder dependencies, {len(cycles)} include cycle(s)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
