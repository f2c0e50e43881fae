// The policy editor's pure parts: JSON pointer → line, and the line diff.
import assert from "node:assert/strict";
import { test } from "node:test";
import { lineOfPointer, locateJsonPointers } from "../src/policy/json_locator";
import { diffLines, withContext } from "../src/policy/line_diff";

const text = `{
  "defaults": {
    "action": "maybe"
  },
  "rules": [
    { "from": ["vdi"], "to": ["file-serverz"] },
    {
      "from": ["a/b", "c~d"]
    }
  ]
}
`;

test("json locator: a member's pointer is the line of its key", () => {
  const located = locateJsonPointers(text);
  assert.equal(located.syntaxError, undefined);
  assert.equal(lineOfPointer(located, "/defaults/action"), 3);
  assert.equal(lineOfPointer(located, "/rules/0/to/0"), 6);
  assert.equal(lineOfPointer(located, "/rules/1/from/1"), 8);
  assert.equal(lineOfPointer(located, ""), 1);
});

test("json locator: escaped pointer tokens and missing members fall back to the nearest ancestor", () => {
  const located = locateJsonPointers('{\n  "a/b": {\n    "c~d": 1\n  }\n}');
  assert.equal(lineOfPointer(located, "/a~1b/c~0d"), 3);
  assert.equal(lineOfPointer(locateJsonPointers(text), "/rules/1/selector/labels"), 7);
  assert.equal(lineOfPointer(locateJsonPointers(text), "/nothing/here"), 1);
});

test("json locator: a syntax error is located", () => {
  const located = locateJsonPointers('{\n  "a": 1,\n  "b": ]\n}');
  assert.equal(located.syntaxError?.line, 3);
  assert.equal(lineOfPointer(located, "/a"), 2);
});

test("line diff: added and removed lines with their numbers", () => {
  const lines = diffLines("a\nb\nc\nd\n", "a\nB\nc\nd\ne\n");
  assert.ok(lines);
  const changed = lines.filter((l) => l.kind !== "same").map((l) => `${l.kind}:${l.text}:${l.newLine ?? l.oldLine}`);
  assert.deepEqual(changed, ["added:B:2", "removed:b:2", "added:e:5"]);
  assert.deepEqual(withContext(diffLines("x\n", "x\n") ?? []), []);
});

test("line diff: context keeps changed lines and marks gaps", () => {
  const before = Array.from({ length: 20 }, (_, i) => `line ${i}`).join("\n");
  const after = before.replace("line 10", "line ten");
  const shown = withContext(diffLines(before, after) ?? [], 2);
  assert.equal(shown[0], null);
  assert.equal(shown[shown.length - 1], null);
  assert.equal(shown.filter((l) => l !== null).length, 6);
});
