// Small DOM helpers: element construction, and the one look of loading, empty and error
// states every view uses.
import { describeError } from "./api";

export type Child = Node | string | number | null | undefined | false | Child[];
type Attributes = Record<string, string | number | boolean | undefined | null | EventListener>;

/** h("a", {href: "#/x", class: "link"}, "text") — attributes starting with "on" are listeners. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(parent: Node, children: Child[]): void {
  for (const child of children) {
    if (Array.isArray(child)) {
      append(parent, child);
    } else if (child !== null && child !== undefined && child !== false) {
      parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
  }
}

export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.textContent = "";
  append(parent, children);
}

export function loadingState(what: string): HTMLElement {
  return h("div", { class: "state state-loading", role: "status", "data-state": "loading" }, h("span", { class: "spinner", "aria-hidden": "true" }), `Loading ${what}…`);
}

export function emptyState(message: string): HTMLElement {
  return h("div", { class: "state state-empty", "data-state": "empty" }, message);
}

export function errorState(error: unknown, retry?: () => void): HTMLElement {
  return h(
    "div",
    { class: "state state-error", role: "alert", "data-state": "error" },
    h("strong", {}, "Could not load: "),
    describeError(error),
    retry ? h("button", { class: "button small", type: "button", onclick: () => retry() }, "Retry") : null,
  );
}

/** A table from rows; `columns` give the header and how each cell is made. */
export interface Column<Row> {
  header: string;
  cell: (row: Row) => Child;
  className?: string;
}

export function table<Row>(columns: Column<Row>[], rows: Row[], options: { caption?: string; rowAttributes?: (row: Row) => Attributes } = {}): HTMLTableElement {
  return h(
    "table",
    { class: "data-table" },
    options.caption ? h("caption", {}, options.caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.className }, c.header)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", options.rowAttributes ? options.rowAttributes(row) : {}, columns.map((c) => h("td", { class: c.className }, c.cell(row))))),
    ),
  );
}

export function badge(text: string, kind: string): HTMLElement {
  return h("span", { class: `badge badge-${kind}` }, text);
}

export function link(href: string, text: string): HTMLAnchorElement {
  return h("a", { href }, text);
}

export function section(title: string, ...children: Child[]): HTMLElement {
  return h("section", { class: "panel", "aria-label": title }, h("h2", {}, title), ...children);
}
