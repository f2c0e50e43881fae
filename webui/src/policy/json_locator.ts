// Where each JSON pointer of a document sits in its text: a small JSON reader that records,
// for every value, the line and column it starts at (for an object member: its key). The
// API reports policy errors by JSON pointer; the editor marks the line this finds.

export interface TextPosition {
  line: number;    // 1-based
  column: number;  // 1-based
}

export interface LocatedDocument {
  positions: Map<string, TextPosition>;
  syntaxError?: TextPosition & { message: string };
}

export function escapePointerToken(token: string): string {
  return token.replace(/~/g, "~0").replace(/\//g, "~1");
}

class SyntaxProblem extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

export function locateJsonPointers(text: string): LocatedDocument {
  const positions = new Map<string, TextPosition>();
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      lineStarts.push(i + 1);
    }
  }
  const positionOf = (offset: number): TextPosition => {
    let low = 0;
    let high = lineStarts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (lineStarts[mid] <= offset) low = mid;
      else high = mid - 1;
    }
    return { line: low + 1, column: offset - lineStarts[low] + 1 };
  };
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  };
  const readString = (): string => {
    if (text[i] !== '"') throw new SyntaxProblem("expected a string", i);
    let out = "";
    i++;
    while (i < text.length) {
      const c = text[i];
      if (c === '"') {
        i++;
        return out;
      }
      if (c === "\\") {
        const next = text[i + 1];
        if (next === "u") {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else {
          out += ({ n: "\n", t: "\t", r: "\r", b: "\b", f: "\f" } as Record<string, string>)[next] ?? next;
          i += 2;
        }
        continue;
      }
      out += c;
      i++;
    }
    throw new SyntaxProblem("unterminated string", i);
  };
  const readValue = (pointer: string, recordAt?: number): void => {
    skipSpace();
    if (i >= text.length) throw new SyntaxProblem("unexpected end of the document", i);
    if (!positions.has(pointer)) {
      positions.set(pointer, positionOf(recordAt ?? i));
    }
    const c = text[i];
    if (c === "{") {
      i++;
      skipSpace();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        skipSpace();
        const keyAt = i;
        const key = readString();
        skipSpace();
        if (text[i] !== ":") throw new SyntaxProblem("expected ':'", i);
        i++;
        readValue(`${pointer}/${escapePointerToken(key)}`, keyAt);
        skipSpace();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return;
        }
        throw new SyntaxProblem("expected ',' or '}'", i);
      }
    }
    if (c === "[") {
      i++;
      skipSpace();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (let index = 0; ; index++) {
        readValue(`${pointer}/${index}`);
        skipSpace();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return;
        }
        throw new SyntaxProblem("expected ',' or ']'", i);
      }
    }
    if (c === '"') {
      readString();
      return;
    }
    const literal = /^(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 64));
    if (!literal) throw new SyntaxProblem("unexpected character", i);
    i += literal[0].length;
  };
  try {
    readValue("");
    skipSpace();
    if (i < text.length) throw new SyntaxProblem("unexpected text after the document", i);
    return { positions };
  } catch (error) {
    if (error instanceof SyntaxProblem) {
      return { positions, syntaxError: { ...positionOf(Math.min(error.offset, Math.max(0, text.length - 1))), message: error.message } };
    }
    throw error;
  }
}

/** The line of `pointer`, or of its nearest ancestor that exists in the text. */
export function lineOfPointer(located: LocatedDocument, pointer: string): number | undefined {
  let current = pointer;
  for (;;) {
    const position = located.positions.get(current);
    if (position) {
      return position.line;
    }
    if (current === "") {
      return undefined;
    }
    current = current.slice(0, Math.max(0, current.lastIndexOf("/")));
  }
}
