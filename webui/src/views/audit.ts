// Audit log: who changed what, when, before/after; filter by actor and action, page back.
import type { View } from "../context";
import { emptyState, errorState, h, loadingState, replaceChildren } from "../dom";
import { formatTime } from "../format";
import type { AuditEntry } from "../types";

const PAGE = 100;

export const auditView: View = (container, context, route) => {
  const actor = h("input", { id: "audit-actor", name: "actor", value: route.query.get("actor") ?? "", placeholder: "token name" });
  const action = h("input", { id: "audit-action", name: "action", value: route.query.get("action") ?? "", placeholder: "e.g. quarantine.create" });
  const listBox = h("div", { id: "audit-list" }, loadingState("the audit log"));
  const more = h("button", { class: "button", type: "button", hidden: true }, "Older entries");
  const form = h(
    "form",
    { class: "filters" },
    h("label", { class: "filter" }, h("span", {}, "Actor"), actor),
    h("label", { class: "filter" }, h("span", {}, "Action"), action),
    h("div", { class: "filter-buttons" }, h("button", { class: "button", type: "submit" }, "Apply")),
  );
  replaceChildren(container, h("h1", {}, "Audit log"), form, listBox, more);
  const body = h("tbody", {});
  let oldest: number | undefined;

  const load = async (reset: boolean) => {
    if (reset) {
      oldest = undefined;
      replaceChildren(listBox, loadingState("the audit log"));
    }
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (actor.value.trim()) params.set("actor", actor.value.trim());
    if (action.value.trim()) params.set("action", action.value.trim());
    if (oldest !== undefined) params.set("before_id", String(oldest));
    try {
      const { entries } = await context.api.get<{ entries: AuditEntry[] }>(`/audit?${params}`);
      if (reset) {
        body.textContent = "";
        if (entries.length === 0) {
          replaceChildren(listBox, emptyState("No audit entry matches."));
          more.hidden = true;
          return;
        }
        replaceChildren(
          listBox,
          h("table", { class: "data-table" }, h("thead", {}, h("tr", {}, ["When", "Actor", "Role", "Action", "Target", "Change"].map((t) => h("th", { scope: "col" }, t)))), body),
        );
      }
      for (const e of entries) {
        body.appendChild(
          h(
            "tr",
            { "data-action": e.action },
            h("td", {}, formatTime(e.at)),
            h("td", {}, e.actor),
            h("td", {}, e.role),
            h("td", {}, h("code", {}, e.action)),
            h("td", {}, e.target),
            h("td", { class: "wide" }, h("details", {}, h("summary", {}, "before / after"), h("div", { class: "before-after" }, h("pre", { class: "json" }, JSON.stringify(e.before, null, 2)), h("pre", { class: "json" }, JSON.stringify(e.after, null, 2))))),
          ),
        );
      }
      if (entries.length > 0) {
        oldest = entries[entries.length - 1].id;
      }
      more.hidden = entries.length < PAGE;
    } catch (error) {
      replaceChildren(listBox, errorState(error, () => void load(true)));
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void load(true);
  });
  more.addEventListener("click", () => void load(false));
  void load(true);
};
