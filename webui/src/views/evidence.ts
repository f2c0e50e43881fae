// Evidence: the signed checkpoints (key id, how many written and failed, the interval, the
// file) and each SIEM destination's delivery: state (failing highlighted, with the last
// error and its kind), backlog depth and the age of the oldest undelivered record, delivered,
// last delivery, and per record source how far delivery got. GET /api/v1/evidence, polled;
// no stream event announces delivery progress.
import { ApiError } from "../api";
import type { View } from "../context";
import { badge, emptyState, errorState, h, loadingState, replaceChildren, table } from "../dom";
import { formatAge, formatCount, formatDuration, formatTime } from "../format";
import type { EvidenceStatus, SiemDestinationStatus } from "../types";
import { keepFresh } from "./refresh";

export const EVIDENCE_POLL_MS = 3000;

const STATE_BADGE: Record<string, string> = { delivering: "ok", starting: "info", failing: "bad" };

function stateCell(d: SiemDestinationStatus) {
  return [
    badge(d.state, STATE_BADGE[d.state] ?? "muted"),
    d.state === "failing" || d.last_error
      ? h(
          "div",
          { class: "siem-error", "data-error-kind": d.last_error_kind || undefined },
          d.last_error_kind ? h("strong", {}, d.last_error_kind + ": ") : null,
          d.last_error || "no error text",
        )
      : null,
  ];
}

function backlogAge(d: SiemDestinationStatus) {
  if (d.oldest_pending_age_ms === null || d.pending === 0) {
    return "–";
  }
  return [
    h("span", { class: d.oldest_pending_age_ms > 60_000 ? "warn-text" : "", "data-age-ms": d.oldest_pending_age_ms }, formatDuration(d.oldest_pending_age_ms)),
    d.oldest_pending_at ? [h("br", {}), h("span", { class: "hint" }, "since " + formatTime(d.oldest_pending_at))] : null,
  ];
}

function sources(d: SiemDestinationStatus) {
  if (d.sources.length === 0) {
    return "–";
  }
  return h(
    "ul",
    { class: "plain-list" },
    d.sources.map((s) =>
      h("li", { "data-source": s.source }, `${s.source}: ${formatCount(s.delivered_through)} / ${formatCount(s.head)}`, s.head > s.delivered_through ? h("span", { class: "hint" }, ` (${formatCount(s.head - s.delivered_through)} behind)`) : null),
    ),
  );
}

export const evidenceView: View = (container, context) => {
  const checkpointBox = h("div", { id: "evidence-checkpoints" }, loadingState("checkpoint status"));
  const siemBox = h("div", { id: "siem-destinations" }, loadingState("SIEM destinations"));
  const updated = h("p", { class: "hint", id: "evidence-updated" });
  replaceChildren(
    container,
    h("h1", {}, "Evidence"),
    updated,
    h(
      "div",
      { class: "evidence-layout" },
      h("section", { class: "panel", "aria-label": "Signed checkpoints" }, h("h2", {}, "Signed checkpoints"), checkpointBox),
      h("section", { class: "panel", "aria-label": "SIEM destinations" }, h("h2", {}, "SIEM destinations"), siemBox),
    ),
  );
  return keepFresh(
    context,
    async () => {
      let status: EvidenceStatus;
      try {
        status = await context.api.get<EvidenceStatus>("/evidence");
      } catch (error) {
        const message =
          error instanceof ApiError && error.status === 503 ? "This controller process does not serve evidence status." : undefined;
        replaceChildren(checkpointBox, message ? emptyState(message) : errorState(error));
        replaceChildren(siemBox);
        return;
      }
      updated.textContent = `Updated ${formatTime(new Date().toISOString())}; refreshed every ${EVIDENCE_POLL_MS / 1000} s.`;
      const c = status.checkpoints;
      replaceChildren(
        checkpointBox,
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Signing key"),
          h("dd", { id: "evidence-key-id" }, status.key_id || "–"),
          h("dt", {}, "Written"),
          h("dd", { id: "evidence-written", "data-value": c.written }, formatCount(c.written)),
          h("dt", {}, "Failures"),
          h("dd", { id: "evidence-failures", "data-value": c.failures, class: c.failures > 0 ? "warn-text" : "" }, formatCount(c.failures)),
          h("dt", {}, "Interval"),
          h("dd", { id: "evidence-interval", "data-value": c.interval_ms }, formatDuration(c.interval_ms)),
          h("dt", {}, "File"),
          h("dd", { id: "evidence-file" }, c.file || "–"),
        ),
        h("p", { class: "hint" }, "Each checkpoint signs the head of every hash chain; keep the file on another disk. bulkheadctl evidence verify --checkpoints FILE checks the store against it."),
      );
      if (status.siem.length === 0) {
        replaceChildren(
          siemBox,
          h(
            "div",
            { class: "state state-empty", "data-state": "empty", id: "siem-none" },
            "No SIEM destination configured: records are kept here only. To export drops, incidents, quarantines, audit and checkpoints to a SIEM (syslog over TLS or UDP; CEF, LEEF or OCSF JSON), add \"siem\": {\"destinations\": [...]} to the controller's --config file; see docs/siem.md.",
          ),
        );
        return;
      }
      const failing = status.siem.filter((d) => d.state === "failing").length;
      replaceChildren(
        siemBox,
        failing > 0 ? h("p", { class: "warn-text", id: "siem-failing", role: "alert" }, `${failing} of ${status.siem.length} destinations failing: records wait in the outbox and are sent in order once the receiver answers.`) : null,
        table<SiemDestinationStatus>(
          [
            { header: "Destination", cell: (d) => h("strong", {}, d.name) },
            { header: "Transport / format", cell: (d) => `${d.transport} / ${d.format}` },
            { header: "Address", cell: (d) => h("code", {}, d.address || "–") },
            { header: "State", cell: stateCell, className: "wide" },
            { header: "Pending", cell: (d) => h("span", { class: "siem-pending", "data-value": d.pending }, formatCount(d.pending)) },
            { header: "Oldest pending", cell: backlogAge },
            { header: "Delivered", cell: (d) => h("span", { class: "siem-delivered", "data-value": d.delivered }, formatCount(d.delivered)) },
            { header: "Failures", cell: (d) => [formatCount(d.failures), d.rate_limited > 0 ? [h("br", {}), h("span", { class: "hint" }, `${formatCount(d.rate_limited)} rate-limited`)] : null] },
            { header: "Last delivery", cell: (d) => (d.last_delivery_at ? [formatAge(d.last_delivery_at), h("br", {}), h("span", { class: "hint" }, formatTime(d.last_delivery_at))] : "never") },
            { header: "Delivered through / head", cell: sources },
          ],
          status.siem,
          { rowAttributes: (d) => ({ "data-destination": d.name, "data-state": d.state, class: d.state === "failing" ? "failing" : undefined }) },
        ),
      );
    },
    { intervalMs: EVIDENCE_POLL_MS },
  );
};
