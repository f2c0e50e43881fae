// A line diff (longest common subsequence) between the active policy and the edited text,
// for people: which lines the edit adds and removes.

export interface DiffLine {
  kind: "same" | "added" | "removed";
  text: string;
  oldLine?: number;
  newLine?: number;
}

const MAX_CELLS = 4_000_000;

export function diffLines(before: string, after: string): DiffLine[] | undefined {
  const a = before.split("\n");
  const b = after.split("\n");
  // Common head and tail need no table.
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  const midA = a.slice(head, a.length - tail);
  const midB = b.slice(head, b.length - tail);
  if (midA.length * midB.length > MAX_CELLS) {
    return undefined;
  }
  const n = midA.length;
  const m = midB.length;
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = midA[i] === midB[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: DiffLine[] = [];
  for (let k = 0; k < head; k++) out.push({ kind: "same", text: a[k], oldLine: k + 1, newLine: k + 1 });
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && midA[i] === midB[j]) {
      out.push({ kind: "same", text: midA[i], oldLine: head + i + 1, newLine: head + j + 1 });
      i++;
      j++;
    } else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      out.push({ kind: "added", text: midB[j], newLine: head + j + 1 });
      j++;
    } else {
      out.push({ kind: "removed", text: midA[i], oldLine: head + i + 1 });
      i++;
    }
  }
  for (let k = 0; k < tail; k++) {
    out.push({ kind: "same", text: a[a.length - tail + k], oldLine: a.length - tail + k + 1, newLine: b.length - tail + k + 1 });
  }
  return out;
}

/** Only the changed lines with `context` unchanged lines around them; gaps become null. */
export function withContext(lines: DiffLine[], context = 3): (DiffLine | null)[] {
  if (lines.every((line) => line.kind === "same")) {
    return [];
  }
  const keep = new Array<boolean>(lines.length).fill(false);
  lines.forEach((line, index) => {
    if (line.kind !== "same") {
      for (let k = Math.max(0, index - context); k <= Math.min(lines.length - 1, index + context); k++) keep[k] = true;
    }
  });
  const out: (DiffLine | null)[] = [];
  lines.forEach((line, index) => {
    if (keep[index]) {
      out.push(line);
    } else if (out.length === 0 || out[out.length - 1] !== null) {
      out.push(null);
    }
  });
  return out;
}
