#!/usr/bin/env python3
"""Self-test of scripts/check-include-cycles.py on small made-up trees: a checker that
could never fail would let the include_cycles test pass on a tangled tree."""

import pathlib
import subprocess
import sys
import tempfile

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "check-include-cycles.py"


def write_tree(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run(root: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *extra],
                          capture_output=True, text=True, check=False)


def expect(condition: bool, what: str, result: subprocess.CompletedProcess) -> None:
    if not condition:
        print(f"FAIL: {what}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}")
        sys.exit(1)


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        # enforcer/a -> enforcer/b -> enforcer/c -> enforcer/a, and policies on the side.
        write_tree(root, {
            "policies/model.hpp": "#pragma once\n",
            "enforcer/a/a.hpp": '#pragma once\n#include "policies/model.hpp"\n',
            "enforcer/a/a.cpp": '#include "enforcer/a/a.hpp"\n#include "enforcer/b/b.hpp"\n',
            "enforcer/b/b.hpp": '#pragma once\n#include "enforcer/c/c.hpp"\n#include <vector>\n',
            "enforcer/c/c.cpp": '// a comment\n  #  include "enforcer/a/a.hpp"\n',
            "enforcer/c/c.hpp": "#pragma once\n",
        })
        result = run(root)
        expect(result.returncode == 1, "a three-folder cycle exits 1", result)
        expect("include cycle: enforcer/a -> enforcer/b -> enforcer/c -> enforcer/a" in result.stdout,
               "the cycle is named in order", result)
        expect("enforcer/a/a.cpp:2: #include \"enforcer/b/b.hpp\"" in result.stdout,
               "the include making a -> b is shown with file and line", result)
        expect("enforcer/c/c.cpp:2:" in result.stdout, "an indented '#  include' counts", result)
        expect("policies" not in result.stdout, "policies, not on the cycle, is not reported", result)

        dot = run(root, "--dot")
        expect(dot.returncode == 1, "--dot still fails on a cycle", dot)
        expect('"enforcer/a" -> "enforcer/b" [label="1", color=red' in dot.stdout,
               "--dot marks cycle edges red", dot)
        expect('"enforcer/a" -> "policies" [label="1"];' in dot.stdout,
               "--dot prints acyclic edges plainly", dot)

        # Break the cycle the way the enforcer did: the shared declaration moves to a folder
        # both sides include.
        (root / "enforcer/c/c.cpp").write_text('#include "enforcer/shared/shared.hpp"\n')
        write_tree(root, {"enforcer/shared/shared.hpp": "#pragma once\n"})
        result = run(root)
        expect(result.returncode == 0, "an acyclic tree exits 0", result)
        expect("0 include cycle(s)" in result.stdout, "an acyclic tree reports no cycle", result)

    with tempfile.TemporaryDirectory() as scratch:
        result = run(pathlib.Path(scratch))
        expect(result.returncode == 2, "a tree with no sources is an error, not a pass", result)
    print("check-include-cycles self-test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
