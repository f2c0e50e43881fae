// Policy (admin): edit the JSON, validate with errors marked at their line, diff against the
// active revision, save a draft with its per-enforcer diff and what-if, activate, and the
// revision history with rollback.
import { ApiError, describeError } from "../api";
import type { View } from "../context";
import { badge, emptyState, errorState, h, loadingState, replaceChildren, section, table } from "../dom";
import { formatCount, formatTime } from "../format";
import { CodeEditor, type LineMark } from "../policy/code_editor";
import { lineOfPointer, locateJsonPointers } from "../policy/json_locator";
import { diffLines, withContext } from "../policy/line_diff";
import type { Activation, Diagnostic, PolicyDiff, Revision, RevisionWithDocument, WhatIf } from "../types";

export function formatPolicy(document: unknown): string {
  return JSON.stringify(document, null, 2) + "\n";
}

/** Each diagnostic with the line it points at in `text` (pointer first, else its own line). */
export function markDiagnostics(text: string, diagnostics: Diagnostic[]): (LineMark & { diagnostic: Diagnostic })[] {
  const located = locateJsonPointers(text);
  return diagnostics.map((diagnostic) => {
    let line: number | undefined;
    if (diagnostic.pointer !== undefined && diagnostic.code !== "json-syntax") {
      line = lineOfPointer(located, diagnostic.pointer);
    }
    line ??= diagnostic.line ?? located.syntaxError?.line ?? 1;
    const where = diagnostic.pointer ? `${diagnostic.pointer}: ` : "";
    return { line, message: `${where}${diagnostic.code ?? "error"}: ${diagnostic.message ?? ""}`, diagnostic };
  });
}

export const policyView: View = (container, context) => {
  if (!context.can("write-policy")) {
    replaceChildren(
      container,
      h("h1", {}, "Policy"),
      h("div", { class: "state state-empty", id: "policy-forbidden", "data-state": "forbidden" }, `Role ${context.user.role} cannot edit policy. Ask an admin; the controller refuses policy changes from this token (403).`),
    );
    return;
  }
  const { api } = context;
  const editor = new CodeEditor(() => onEdit());
  const status = h("p", { class: "action-message", role: "status", id: "policy-status" });
  const problems = h("div", { id: "policy-problems" });
  const diffBox = h("div", { id: "policy-diff" }, emptyState("No change against the active revision."));
  const serverDiffBox = h("div", { id: "policy-server-diff" }, emptyState("Save a draft to see what each enforcer would change."));
  const whatIfBox = h("div", { id: "policy-what-if" }, emptyState("Save a draft to see which stored drops and flows it would change."));
  const historyBox = h("div", { id: "policy-history" }, loadingState("revisions"));
  const button = (label: string, id: string, run: () => Promise<void>, kind = "") => {
    const b = h("button", { class: `button ${kind}`, type: "button", id }, label);
    b.addEventListener("click", async () => {
      for (const other of toolbar.querySelectorAll("button")) other.disabled = true;
      try {
        await run();
      } finally {
        for (const other of toolbar.querySelectorAll("button")) other.disabled = false;
      }
    });
    return b;
  };
  const toolbar = h(
    "div",
    { class: "actions", role: "toolbar", "aria-label": "Policy actions" },
    button("Validate", "policy-validate", async () => void (await validate())),
    button("Save draft", "policy-save", async () => void (await saveDraft())),
    button("Activate", "policy-activate", () => activate(), "primary"),
    button("Reload active", "policy-reload", () => loadActive()),
    button("Roll back", "policy-rollback", () => rollback(), "danger"),
  );
  replaceChildren(
    container,
    h("h1", {}, "Policy"),
    toolbar,
    status,
    h(
      "div",
      { class: "policy-layout" },
      h("div", { class: "policy-editor" }, editor.element, problems),
      h(
        "div",
        { class: "policy-side" },
        section("Diff against the active revision", diffBox),
        section("Per-enforcer changes (saved draft)", serverDiffBox),
        section("What-if (stored events, last 24 h)", whatIfBox),
        section("History", historyBox),
      ),
    ),
  );

  let activeText = "";
  let activeRevision: number | null = null;
  let draft: { id: number; text: string } | undefined;
  let diffTimer: number | undefined;

  function onEdit(): void {
    window.clearTimeout(diffTimer);
    diffTimer = window.setTimeout(renderLineDiff, 250);
  }

  function renderLineDiff(): void {
    const lines = diffLines(activeText, editor.value);
    if (!lines) {
      replaceChildren(diffBox, emptyState("Too large for a line diff; save a draft for the per-enforcer diff."));
      return;
    }
    const shown = withContext(lines);
    if (shown.length === 0) {
      replaceChildren(diffBox, emptyState(activeRevision === null ? "No active revision yet." : "No change against the active revision."));
      return;
    }
    const added = lines.filter((l) => l.kind === "added").length;
    const removed = lines.filter((l) => l.kind === "removed").length;
    replaceChildren(
      diffBox,
      h("p", { class: "hint" }, `+${added} −${removed} lines against revision ${activeRevision ?? "none"}`),
      h(
        "pre",
        { class: "diff" },
        shown.map((l) =>
          l === null
            ? h("span", { class: "diff-gap" }, "…\n")
            : h("span", { class: `diff-${l.kind}` }, `${l.kind === "added" ? "+" : l.kind === "removed" ? "−" : " "} ${String(l.newLine ?? l.oldLine).padStart(4)}  ${l.text}\n`),
        ),
      ),
    );
  }

  function showProblems(diagnostics: Diagnostic[], headline: string): void {
    const marks = markDiagnostics(editor.value, diagnostics);
    editor.setMarks(marks);
    replaceChildren(
      problems,
      h("h2", { class: "problems-title" }, headline),
      h(
        "ul",
        { class: "problems", id: "policy-problem-list" },
        marks.map((m) =>
          h(
            "li",
            {},
            h("button", { class: "link-button", type: "button", "data-line": m.line, onclick: () => editor.goToLine(m.line) }, `line ${m.line}`),
            " ",
            m.message,
          ),
        ),
      ),
    );
    if (marks.length > 0) {
      editor.goToLine(marks[0].line);
    }
  }

  function clearProblems(): void {
    editor.setMarks([]);
    problems.textContent = "";
  }

  /** Handles an error answer: diagnostics at their lines, or a message. */
  function reportFailure(what: string, error: unknown): void {
    if (error instanceof ApiError && (error.body.errors?.length ?? 0) > 0) {
      const diagnostics = error.body.errors as Diagnostic[];
      status.textContent = `${what}: ${diagnostics.length} problem${diagnostics.length === 1 ? "" : "s"} (${error.code}).`;
      showProblems(diagnostics, `${diagnostics.length} problem${diagnostics.length === 1 ? "" : "s"}`);
    } else if (error instanceof ApiError && error.body.pointer !== undefined) {
      status.textContent = `${what}: ${describeError(error)}`;
      showProblems([{ pointer: error.body.pointer, code: error.code, message: error.body.message }], "1 problem");
    } else {
      status.textContent = `${what}: ${describeError(error)}`;
    }
  }

  async function validate(): Promise<boolean> {
    status.textContent = "Validating…";
    try {
      const result = await api.post<{ valid: boolean; name: string; enforcers: string[] }>("/policies/validate", { text: editor.value });
      clearProblems();
      status.textContent = `Valid: policy "${result.name}" compiles for ${result.enforcers.join(", ") || "no enforcer"}.`;
      return true;
    } catch (error) {
      reportFailure("Not valid", error);
      return false;
    }
  }

  async function saveDraft(): Promise<number | undefined> {
    if (draft && draft.text === editor.value) {
      return draft.id;
    }
    status.textContent = "Saving a draft…";
    try {
      const revision = await api.post<Revision>("/policies", { text: editor.value });
      draft = { id: revision.id, text: editor.value };
      clearProblems();
      status.textContent = `Saved as draft revision ${revision.id}.`;
      void loadHistory();
      void loadServerDiff(revision.id);
      void loadWhatIf(revision.id);
      return revision.id;
    } catch (error) {
      reportFailure("Not saved", error);
      return undefined;
    }
  }

  async function activate(): Promise<void> {
    const id = await saveDraft();
    if (id === undefined) {
      return;
    }
    status.textContent = `Activating revision ${id}…`;
    try {
      const activation = await api.post<Activation>(`/policies/${id}/activate`);
      status.textContent = `Revision ${activation.id} is active (ruleset generation ${activation.generation}).`;
      status.dataset.activated = String(activation.id);
      await loadActive(false);
    } catch (error) {
      reportFailure("Not activated", error);
    }
  }

  async function rollback(): Promise<void> {
    status.textContent = "Rolling back…";
    try {
      const activation = await api.post<Activation>("/policies/rollback");
      status.textContent = `Rolled back: revision ${activation.id} is active again (generation ${activation.generation}).`;
      await loadActive();
    } catch (error) {
      status.textContent = "Rollback failed: " + describeError(error);
    }
  }

  async function loadServerDiff(id: number): Promise<void> {
    replaceChildren(serverDiffBox, loadingState("the diff"));
    try {
      const diff = await api.get<PolicyDiff>(`/policies/${id}/diff`);
      replaceChildren(
        serverDiffBox,
        h("p", {}, `Revision ${diff.revision} against ${diff.against ?? "nothing"}: +${diff.elements_added} / −${diff.elements_removed} set elements, ${diff.rules_written} rules written.`),
        diff.enforcers.map((e) =>
          h(
            "details",
            { open: !e.unchanged },
            h("summary", {}, `${e.enforcer}: `, e.unchanged ? "unchanged" : `${e.full_replace ? "full replace, " : ""}+${e.elements_added} / −${e.elements_removed} elements, ${e.rules_written} rules`),
            e.unchanged ? null : h("pre", { class: "diff" }, e.text),
          ),
        ),
      );
    } catch (error) {
      replaceChildren(serverDiffBox, errorState(error));
    }
  }

  async function loadWhatIf(id: number): Promise<void> {
    replaceChildren(whatIfBox, loadingState("what-if"));
    try {
      const result = await api.post<WhatIf>(`/policies/${id}/what-if`);
      replaceChildren(
        whatIfBox,
        h(
          "p",
          { id: "what-if-summary" },
          `${formatCount(result.events)} events evaluated${result.truncated ? " (truncated)" : ""}: ${formatCount(result.newly_allowed)} newly allowed, ${formatCount(result.newly_blocked)} newly blocked, ${formatCount(result.unchanged)} unchanged.`,
        ),
        result.groups.length === 0
          ? null
          : table(
              [
                { header: "Change", cell: (g) => badge(g.change, g.change === "newly-blocked" ? "bad" : "warn") },
                { header: "Reason", cell: (g) => g.reason },
                { header: "Rules", cell: (g) => g.rules.join(", ") },
                { header: "Events", cell: (g) => formatCount(g.events), className: "number" },
              ],
              result.groups,
            ),
      );
    } catch (error) {
      if (error instanceof ApiError && error.status === 501) {
        replaceChildren(whatIfBox, emptyState("What-if is not available on this controller yet."));
      } else {
        replaceChildren(whatIfBox, errorState(error));
      }
    }
  }

  async function loadHistory(): Promise<void> {
    try {
      const { revisions } = await api.get<{ revisions: Revision[] }>("/policies?limit=50");
      replaceChildren(
        historyBox,
        revisions.length === 0
          ? emptyState("No revision yet.")
          : table<Revision>(
              [
                { header: "Rev", cell: (r) => String(r.id) },
                { header: "State", cell: (r) => badge(r.state, r.state === "active" ? "ok" : r.state === "draft" ? "info" : "muted") },
                { header: "Name", cell: (r) => r.name },
                { header: "Author", cell: (r) => r.author },
                { header: "Created", cell: (r) => formatTime(r.created_at) },
                { header: "Activated", cell: (r) => formatTime(r.activated_at) },
                {
                  header: "",
                  cell: (r) => [
                    h("button", { class: "button small", type: "button", onclick: () => void loadRevision(r.id) }, "Open"),
                    r.state !== "active" ? h("button", { class: "button small", type: "button", onclick: () => void activateRevision(r.id) }, "Activate") : null,
                  ],
                },
              ],
              revisions,
              { rowAttributes: (r) => ({ "data-revision": r.id, "data-state": r.state }) },
            ),
      );
    } catch (error) {
      replaceChildren(historyBox, errorState(error, () => void loadHistory()));
    }
  }

  async function loadRevision(id: number): Promise<void> {
    try {
      const revision = await api.get<RevisionWithDocument>(`/policies/${id}`);
      editor.value = formatPolicy(revision.document);
      draft = revision.state === "draft" ? { id, text: editor.value } : undefined;
      clearProblems();
      renderLineDiff();
      status.textContent = `Revision ${id} (${revision.state}) loaded into the editor.`;
    } catch (error) {
      status.textContent = "Cannot open it: " + describeError(error);
    }
  }

  async function activateRevision(id: number): Promise<void> {
    try {
      const activation = await api.post<Activation>(`/policies/${id}/activate`);
      status.textContent = `Revision ${activation.id} is active (generation ${activation.generation}).`;
      await loadActive();
    } catch (error) {
      reportFailure("Not activated", error);
    }
  }

  async function loadActive(replaceText = true): Promise<void> {
    try {
      const active = await api.get<RevisionWithDocument>("/policies/active");
      activeText = formatPolicy(active.document);
      activeRevision = active.id;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        status.textContent = "Cannot load the active revision: " + describeError(error);
      }
      activeText = "";
      activeRevision = null;
    }
    if (replaceText) {
      editor.value = activeText;
      draft = undefined;
      clearProblems();
    }
    renderLineDiff();
    await loadHistory();
  }

  void loadActive();
  return () => window.clearTimeout(diffTimer);
};
