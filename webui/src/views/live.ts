// Live drop log: the stream's drops in a virtualised table, newest first. Incoming batches
// wait in a queue and join the table once per animation frame; the buffer keeps the newest
// BUFFER_CAPACITY drops. Filters, search, pause/resume, and click-through to the workload and
// its open incident.
import type { View } from "../context";
import { h, replaceChildren } from "../dom";
import { formatClock, formatCount, eventTimeMs } from "../format";
import { BoundedLog } from "../live/bounded_log";
import { criteriaFromQuery, makeDropPredicate, searchableText, type DropCriteria } from "../live/drop_filter";
import { SegmentIndex } from "../live/segment_index";
import { VirtualTable } from "../live/virtual_table";
import type { DropEvent, Incident, PolicySegment, RevisionWithDocument, Workload } from "../types";

const BUFFER_CAPACITY = 50_000;
const PAUSED_QUEUE_CAPACITY = 50_000;

interface LiveRow {
  seq: number;
  event: DropEvent;
  text?: string;   // lower-case search text, made on first search
  clock?: string;  // formatted time, made on first display
}

function rowClock(row: LiveRow): string {
  if (row.clock === undefined) {
    row.clock = formatClock(eventTimeMs(row.event));
  }
  return row.clock;
}

/** Sets a cell's text only when it changed (the DOM write is the expensive part). */
function setText(cell: HTMLElement, text: string): void {
  if (cell.textContent !== text) {
    cell.textContent = text;
  }
}

function rowText(row: LiveRow): string {
  if (row.text === undefined) {
    row.text = searchableText(row.event);
  }
  return row.text;
}

export const liveView: View = (container, context, route) => {
  const { api, stream } = context;
  let criteria: DropCriteria = criteriaFromQuery(route.query);
  let segments: SegmentIndex | undefined;
  let predicate = makeDropPredicate(criteria, segments);
  const all = new BoundedLog<LiveRow>(BUFFER_CAPACITY);
  const shown = new BoundedLog<LiveRow>(BUFFER_CAPACITY);
  let incoming: DropEvent[][] = [];
  let pausedQueue: DropEvent[][] = [];
  let pausedCount = 0;
  let pausedOverflow = 0;
  let paused = false;
  let nextSeq = 1;
  let received = 0;
  let lostMessages = 0;
  const openIncidentByWorkload = new Map<string, number>();

  // --- controls -------------------------------------------------------------------------
  const input = (name: keyof DropCriteria, label: string, attributes: Record<string, string> = {}) => {
    const element = h("input", { id: `filter-${name}`, name, value: criteria[name], autocomplete: "off", ...attributes });
    element.addEventListener("input", () => applyCriteria({ ...criteria, [name]: element.value }));
    return h("label", { class: "filter" }, h("span", {}, label), element);
  };
  const reasonSelect = h(
    "select",
    { id: "filter-reason", name: "reason" },
    ["", "default", "deny", "decoy", "tripwire", "quarantine", "spoof", "allow"].map((r) => h("option", { value: r, selected: r === criteria.reason }, r || "any")),
  );
  reasonSelect.addEventListener("change", () => applyCriteria({ ...criteria, reason: reasonSelect.value }));
  const segmentSelect = h("select", { id: "filter-segment", name: "segment" }, h("option", { value: "" }, "any"));
  segmentSelect.addEventListener("change", () => applyCriteria({ ...criteria, segment: segmentSelect.value }));
  const workloadList = h("datalist", { id: "workload-ids" });
  const pauseButton = h("button", { class: "button", type: "button", id: "pause-button", "aria-pressed": "false", title: "Pause or resume (Alt+P)" }, "Pause");
  pauseButton.addEventListener("click", () => setPaused(!paused));
  const clearButton = h("button", { class: "button", type: "button", id: "clear-button" }, "Clear");
  clearButton.addEventListener("click", () => {
    all.clear();
    shown.clear();
    table.reset(0);
    updateStats();
  });
  const stats = h("p", { class: "live-stats", id: "live-stats", role: "status", "aria-live": "off" });
  const waiting = h("div", { class: "state state-empty live-waiting", "data-state": "empty" }, "No drop matches yet. New drops appear here as the enforcers report them.");
  const detail = h("aside", { class: "panel live-detail", id: "live-detail", "aria-label": "Selected drop" }, h("p", { class: "hint" }, "Select a drop (click, or arrow keys and Enter) to see all its fields."));

  // --- table ----------------------------------------------------------------------------
  const setLink = (cell: HTMLElement, href: string | undefined, text: string) => {
    let anchor = cell.firstElementChild as HTMLAnchorElement | null;
    if (!href) {
      if (anchor || cell.textContent !== text) {
        cell.textContent = text;
      }
      return;
    }
    if (!anchor) {
      cell.textContent = "";
      anchor = document.createElement("a");
      cell.appendChild(anchor);
    }
    if (anchor.dataset.href !== href) {
      anchor.dataset.href = href;
      anchor.href = href;
    }
    setText(anchor, text);
  };
  const table = new VirtualTable<LiveRow>(
    [
      { header: "Time", width: "88px", fill: (c, r) => setText(c, rowClock(r)) },
      { header: "Enforcer", width: "72px", fill: (c, r) => setText(c, r.event.enforcer) },
      { header: "Workload", width: "minmax(90px,1fr)", fill: (c, r) => setLink(c, r.event.workload ? `#/workloads/${encodeURIComponent(r.event.workload)}` : undefined, r.event.workload || "–") },
      { header: "Dir", width: "40px", fill: (c, r) => setText(c, r.event.direction ?? "") },
      { header: "Source", width: "minmax(110px,1.4fr)", fill: (c, r) => setText(c, r.event.src ?? "") },
      { header: "Destination", width: "minmax(110px,1.4fr)", fill: (c, r) => setText(c, r.event.dst ?? "") },
      { header: "Port", width: "90px", fill: (c, r) => setText(c, r.event.dport !== undefined ? `${r.event.proto_name ?? ""}/${r.event.dport}` : r.event.proto_name ?? "") },
      {
        header: "Reason",
        width: "96px",
        fill: (c, r) => {
          setText(c, r.event.reason ?? r.event.type);
          const className = `reason reason-${r.event.reason ?? "none"}`;
          if (c.className !== className) {
            c.className = className;
          }
        },
      },
      { header: "Count", width: "56px", fill: (c, r) => setText(c, String(r.event.count ?? 1)) },
      {
        header: "Incident",
        width: "80px",
        fill: (c, r) => {
          const id = r.event.workload ? openIncidentByWorkload.get(r.event.workload) : undefined;
          setLink(c, id !== undefined ? `#/incidents/${id}` : undefined, id !== undefined ? `#${id}` : "");
        },
      },
    ],
    (index) => shown.newest(index),
    (row) => showDetail(row),
  );

  replaceChildren(
    container,
    h("h1", {}, "Live drop log"),
    h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter drops", onsubmit: (e: Event) => e.preventDefault() },
      input("workload", "Workload", { list: "workload-ids" }),
      workloadList,
      h("label", { class: "filter" }, h("span", {}, "Segment"), segmentSelect),
      input("address", "Address"),
      input("port", "Port", { inputmode: "numeric", pattern: "[0-9]*" }),
      h("label", { class: "filter" }, h("span", {}, "Reason"), reasonSelect),
      input("search", "Search", { type: "search", placeholder: "any text (/ to focus)" }),
      h("div", { class: "filter-buttons" }, pauseButton, clearButton),
    ),
    stats,
    h("div", { class: "live-layout" }, h("div", { class: "live-table" }, table.element, waiting), detail),
  );

  function showDetail(row: LiveRow): void {
    const e = row.event;
    const incidentId = e.workload ? openIncidentByWorkload.get(e.workload) : undefined;
    replaceChildren(
      detail,
      h("h2", {}, `Drop ${e.id}`),
      h(
        "p",
        { class: "detail-links" },
        e.workload ? h("a", { href: `#/workloads/${encodeURIComponent(e.workload)}`, id: "detail-workload-link" }, `Workload ${e.workload}`) : "Not attributed to a workload",
        incidentId !== undefined ? [" · ", h("a", { href: `#/incidents/${incidentId}`, id: "detail-incident-link" }, `Open incident #${incidentId}`)] : null,
      ),
      h("pre", { class: "json" }, JSON.stringify(e, null, 2)),
    );
  }

  // --- data flow ------------------------------------------------------------------------
  function applyCriteria(next: DropCriteria): void {
    criteria = next;
    predicate = makeDropPredicate(criteria, segments);
    shown.clear();
    all.forEach((row) => {
      if (predicate(row.event, () => rowText(row))) {
        shown.push(row);
      }
    });
    table.reset(shown.length);
    updateStats();
  }

  function setPaused(value: boolean): void {
    paused = value;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    container.classList.toggle("paused", paused);
    if (!paused) {
      incoming.push(...pausedQueue);
      pausedQueue = [];
      pausedCount = 0;
      scheduleFlush();
    }
    updateStats();
  }

  let flushRequested = false;
  function scheduleFlush(): void {
    if (!flushRequested) {
      flushRequested = true;
      requestAnimationFrame(flush);
    }
  }

  function flush(): void {
    flushRequested = false;
    if (paused || incoming.length === 0) {
      return;
    }
    const batches = incoming;
    incoming = [];
    let added = 0;
    for (const batch of batches) {
      for (const event of batch) {
        const row: LiveRow = { seq: nextSeq++, event };
        all.push(row);
        if (predicate(event, () => rowText(row))) {
          shown.push(row);
          added++;
        }
      }
    }
    const oldest = all.at(0);
    if (oldest) {
      shown.dropOldestWhile((row) => row.seq < oldest.seq);
    }
    table.setRowCount(shown.length, added);
    updateStatsSoon();
  }

  const offDrops = stream.on("drops", (events) => {
    received += events.length;
    if (paused) {
      pausedCount += events.length;
      pausedQueue.push(events);
      while (pausedCount > PAUSED_QUEUE_CAPACITY && pausedQueue.length > 1) {
        const dropped = pausedQueue.shift() as DropEvent[];
        pausedCount -= dropped.length;
        pausedOverflow += dropped.length;
      }
      updateStatsSoon();
      return;
    }
    incoming.push(events);
    scheduleFlush();
  });
  const offLost = stream.on("lost", (info) => {
    lostMessages += info.messages;
    updateStatsSoon();
  });
  const offIncident = stream.on("incident", ({ incident }) => {
    if (incident.state === "resolved") {
      openIncidentByWorkload.delete(incident.source_workload);
    } else {
      openIncidentByWorkload.set(incident.source_workload, incident.id);
    }
  });

  // Arrival rate, over one-second steps.
  let rateWindowStart = performance.now();
  let rateWindowReceived = 0;
  let rate = 0;
  let statsTimer: number | undefined;
  function updateStatsSoon(): void {
    if (statsTimer === undefined) {
      statsTimer = window.setTimeout(() => {
        statsTimer = undefined;
        updateStats();
      }, 250);
    }
  }
  function updateStats(): void {
    const now = performance.now();
    if (now - rateWindowStart >= 1000) {
      rate = ((received - rateWindowReceived) * 1000) / (now - rateWindowStart);
      rateWindowStart = now;
      rateWindowReceived = received;
    }
    waiting.hidden = shown.length > 0;
    stats.dataset.received = String(received);
    stats.dataset.shown = String(shown.length);
    stats.dataset.buffered = String(all.length);
    stats.textContent =
      `${formatCount(received)} drops received (${formatCount(Math.round(rate))}/s) · ${formatCount(shown.length)} match the filters · ` +
      `buffer ${formatCount(all.length)}/${formatCount(BUFFER_CAPACITY)}` +
      (paused ? ` · PAUSED, ${formatCount(pausedCount)} waiting` : "") +
      (pausedOverflow > 0 ? ` · ${formatCount(pausedOverflow)} skipped while paused` : "") +
      (lostMessages > 0 ? ` · ${formatCount(lostMessages)} stream messages lost (the browser fell behind)` : "");
  }
  const statsTicker = window.setInterval(updateStats, 1000);

  const onKey = (event: KeyboardEvent) => {
    const target = event.target as HTMLElement;
    const typing = target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT";
    if (event.key === "/" && !typing) {
      event.preventDefault();
      (container.querySelector("#filter-search") as HTMLInputElement | null)?.focus();
    } else if (event.altKey && event.key.toLowerCase() === "p") {
      event.preventDefault();
      setPaused(!paused);
    }
  };
  window.addEventListener("keydown", onKey);

  // Seed: the newest stored drops, segments for the filter, open incidents for the links.
  void (async () => {
    try {
      const recent = await api.get<{ events: DropEvent[] }>("/events?limit=500");
      const blocked = recent.events.filter((e) => e.type === "drop" || e.type === "drop_summary" || e.type === "allowed_flow").reverse();
      if (blocked.length > 0) {
        incoming.unshift(blocked);
        scheduleFlush();
      }
    } catch {
      // the stream still works; the connectivity banner tells if the controller is away
    }
  })();
  void (async () => {
    try {
      const [policy, workloads] = await Promise.all([
        api.get<RevisionWithDocument>("/policies/active").catch(() => undefined),
        api.get<{ workloads: Workload[] }>("/workloads"),
      ]);
      const segmentList = ((policy?.document as { segments?: PolicySegment[] } | undefined)?.segments ?? []) as PolicySegment[];
      segments = new SegmentIndex(segmentList, workloads.workloads);
      for (const name of segments.names) {
        segmentSelect.appendChild(h("option", { value: name, selected: name === criteria.segment }, name));
      }
      for (const w of workloads.workloads) {
        workloadList.appendChild(h("option", { value: w.id }));
      }
      if (criteria.segment) {
        applyCriteria(criteria);
      }
    } catch {
      // without the segment index, a segment filter matches nothing
    }
  })();
  void (async () => {
    try {
      const [open, acknowledged] = await Promise.all([
        api.get<{ incidents: Incident[] }>("/incidents?state=open&limit=1000"),
        api.get<{ incidents: Incident[] }>("/incidents?state=acknowledged&limit=1000"),
      ]);
      for (const i of [...acknowledged.incidents, ...open.incidents].reverse()) {
        openIncidentByWorkload.set(i.source_workload, i.id);
      }
      table.requestRender();
    } catch {
      // links to incidents appear as their stream events arrive
    }
  })();
  updateStats();
  if (route.query.get("paused") === "1") {
    setPaused(true);
  }

  return () => {
    offDrops();
    offLost();
    offIncident();
    window.removeEventListener("keydown", onKey);
    window.clearInterval(statsTicker);
    window.clearTimeout(statsTimer);
  };
};
