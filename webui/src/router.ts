// Hash routes (#/incidents/12?x=y): the controller serves index.html for every non-API path
// as well, but hash routes keep reloads and links working without server help.
import type { RouteMatch } from "./context";

export interface RouteDefinition<T> {
  pattern: RegExp;
  target: T;
}

export function parseHash(hash: string): { path: string; query: URLSearchParams } {
  const text = hash.replace(/^#\/?/, "");
  const mark = text.indexOf("?");
  const path = mark < 0 ? text : text.slice(0, mark);
  return { path: path.replace(/\/+$/, ""), query: new URLSearchParams(mark < 0 ? "" : text.slice(mark + 1)) };
}

export function matchRoute<T>(routes: RouteDefinition<T>[], hash: string): { target: T; match: RouteMatch } | undefined {
  const { path, query } = parseHash(hash);
  for (const route of routes) {
    const m = route.pattern.exec(path);
    if (m) {
      return { target: route.target, match: { params: m.slice(1).map((p) => decodeURIComponent(p)), query } };
    }
  }
  return undefined;
}
