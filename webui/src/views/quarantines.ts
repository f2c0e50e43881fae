// Quarantines: who, why, since when, applied on which enforcers; release; quarantine a
// workload by id or address.
import { ApiError, describeError } from "../api";
import type { View } from "../context";
import { badge, emptyState, errorState, h, link, loadingState, replaceChildren, table } from "../dom";
import { formatAge, formatTime } from "../format";
import type { Quarantine } from "../types";
import { keepFresh } from "./refresh";

export const quarantinesView: View = (container, context) => {
  const listBox = h("div", { id: "quarantine-list" }, loadingState("quarantines"));
  const message = h("p", { class: "action-message", role: "status", id: "quarantine-message" });
  const target = h("input", { id: "quarantine-target", name: "target", placeholder: "workload id or address", required: true });
  const reason = h("input", { id: "quarantine-reason", name: "reason", placeholder: "why (recorded in the audit log)" });
  const form = h(
    "form",
    { class: "filters", id: "quarantine-form", "aria-label": "Quarantine a workload" },
    h("label", { class: "filter" }, h("span", {}, "Workload or address"), target),
    h("label", { class: "filter wide" }, h("span", {}, "Reason"), reason),
    h("div", { class: "filter-buttons" }, h("button", { class: "button danger", type: "submit" }, "Quarantine")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = target.value.trim();
    if (!value) {
      return;
    }
    const isAddress = /^[0-9.]+$|:/.test(value);
    message.textContent = "Quarantining…";
    try {
      const result = await context.api.post<Quarantine>("/quarantines?wait_ms=5000", {
        json: { [isAddress ? "address" : "workload"]: value, reason: reason.value.trim() || "quarantined from the dashboard" },
      });
      message.textContent = result.created === false ? `${result.workload} was already in quarantine.` : `${result.workload} quarantined.`;
      target.value = "";
      reason.value = "";
    } catch (error) {
      if (error instanceof ApiError && error.code === "ambiguous") {
        message.textContent = `Several workloads hold ${value}: ${(error.body.candidates ?? []).map((c) => c.workload).join(", ")}. Name the workload instead.`;
      } else {
        message.textContent = "Failed: " + describeError(error);
      }
    }
    await refresh();
  });

  replaceChildren(container, h("h1", {}, "Quarantines"), context.can("quarantine") ? [form, message] : null, listBox);

  const release = async (workload: string) => {
    message.textContent = `Releasing ${workload}…`;
    try {
      await context.api.delete(`/quarantines/${encodeURIComponent(workload)}?wait_ms=5000`);
      message.textContent = `${workload} released.`;
    } catch (error) {
      message.textContent = "Failed: " + describeError(error);
    }
    await refresh();
  };

  const refresh = async () => {
    try {
      const { quarantines } = await context.api.get<{ quarantines: Quarantine[] }>("/quarantines");
      replaceChildren(
        listBox,
        quarantines.length === 0
          ? emptyState("No workload is in quarantine.")
          : table<Quarantine>(
              [
                { header: "Workload", cell: (q) => link(`#/workloads/${encodeURIComponent(q.workload)}`, q.workload) },
                {
                  header: "Who",
                  cell: (q) =>
                    q.contained_by === "kernel"
                      ? [q.actor, " ", badge("contained by the kernel", "info")]
                      : q.automatic
                        ? [q.actor, " ", badge("automatic", "info")]
                        : q.actor,
                },
                { header: "Why", cell: (q) => q.reason, className: "wide" },
                { header: "Incident", cell: (q) => (q.incident !== null ? link(`#/incidents/${q.incident}`, `#${q.incident}`) : "–") },
                { header: "Since", cell: (q) => [formatTime(q.created_at), h("br", {}), h("span", { class: "hint" }, formatAge(q.created_at))] },
                {
                  header: "Applied on",
                  cell: (q) =>
                    q.enforcers.length === 0
                      ? "no enforcer"
                      : q.enforcers.map((e) => h("span", { class: "enforcer-state", "data-enforcer": e.enforcer, "data-state": e.state }, badge(`${e.enforcer}: ${e.state}`, e.state === "applied" ? "ok" : "warn"))),
                },
                {
                  header: "",
                  cell: (q) => (context.can("quarantine") ? h("button", { class: "button small", type: "button", "data-release": q.workload, onclick: () => void release(q.workload) }, "Release") : null),
                },
              ],
              quarantines,
              { rowAttributes: (q) => ({ "data-workload": q.workload }) },
            ),
      );
    } catch (error) {
      replaceChildren(listBox, errorState(error, () => void refresh()));
    }
  };
  return keepFresh(context, refresh, { intervalMs: 5000, on: ["quarantine", "enforcer"] });
};
