// Drop log: live, the stream's drops in a virtualised table, newest first. Incoming batches
// wait in a queue and join the table once per animation frame; the buffer keeps the newest
// BUFFER_CAPACITY drops. Filters, search, pause/resume, and click-through to the workload and
// its open incident. History: a time range (quick choices or from/to) read from
// /api/v1/events page by page into the same table; workload, address, port and reason go to
// the server, segment and search filter what was loaded. Events whose enforcer clock was off
// carry a clock flag in both modes.
import { describeError } from "../api";
import type { View } from "../context";
import { h, replaceChildren } from "../dom";
import { formatClock, formatCount, formatTime } from "../format";
import { BoundedLog } from "../live/bounded_log";
import { clockFlag, type ClockFlag } from "../live/clock_flag";
import { criteriaFromQuery, makeDropPredicate, searchableText, type DropCriteria } from "../live/drop_filter";
import {
  QUICK_RANGES,
  eventOwnTimeMs,
  fromLocalInput,
  historyPageQuery,
  newestFirst,
  parseRouteTime,
  quickRange,
  rangeProblem,
  toLocalInput,
  type TimeRange,
} from "../live/history_query";
import { SegmentIndex } from "../live/segment_index";
import { VirtualTable } from "../live/virtual_table";
import type { DropEvent, EventPage, Incident, PolicySegment, RevisionWithDocument, Workload } from "../types";

const dayFormat = new Intl.DateTimeFormat(undefined, { month: "2-digit", day: "2-digit" });

const BUFFER_CAPACITY = 50_000;
const PAUSED_QUEUE_CAPACITY = 50_000;
/** History: events per request, and per load (more with "Load more"). */
const HISTORY_PAGE_SIZE = 1000;
const HISTORY_LOAD_CAP = 10_000;

type Mode = "live" | "history";

/** What the drop log shows: drops, their summaries and allowed-flow records (not enforcer lifecycle events). */
function isDropLog(event: DropEvent): boolean {
  return event.type === "drop" || event.type === "drop_summary" || event.type === "allowed_flow";
}

interface LiveRow {
  seq: number;
  event: DropEvent;
  text?: string;   // lower-case search text, made on first search
  clock?: string;  // formatted time, made on first display
  flag?: ClockFlag | null;  // the clock flag, made on first display
}

function rowFlag(row: LiveRow): ClockFlag | null {
  if (row.flag === undefined) {
    row.flag = clockFlag(row.event) ?? null;
  }
  return row.flag;
}

/** The Clock cell: empty, or one badge with the offset and a tooltip saying what it means. */
function fillClockFlag(cell: HTMLElement, row: LiveRow): void {
  const flag = rowFlag(row);
  if (!flag) {
    if (cell.firstChild) {
      cell.textContent = "";
    }
    return;
  }
  let badge = cell.firstElementChild as HTMLElement | null;
  if (!badge) {
    cell.textContent = "";
    badge = document.createElement("span");
    badge.className = "badge badge-warn clock-flag";
    cell.appendChild(badge);
  }
  setText(badge, flag.label);
  if (badge.title !== flag.tooltip) {
    badge.title = flag.tooltip;
  }
}

function rowClock(row: LiveRow, withDate: boolean): string {
  if (row.clock === undefined) {
    const ms = eventOwnTimeMs(row.event);
    // History spans days: month and day in front of the time of day.
    row.clock = withDate ? `${dayFormat.format(ms)} ${formatClock(ms)}` : formatClock(ms);
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
  // History mode.
  let mode: Mode = route.query.get("mode") === "history" ? "history" : "live";
  let historyRows: LiveRow[] = [];   // loaded, newest first
  let historyShown: LiveRow[] = [];  // those the browser-side filters (segment, search) keep
  let historyRange: TimeRange | undefined;
  let historyQuery = "";             // the server-side part of the loaded query, to reload on change
  let historyNextAfter: number | undefined;
  let historyPages = 0;
  let historyOther = 0;              // loaded events that are not drops (enforcer lifecycle), left out
  let historyGeneration = 0;         // a newer load makes an older one's answers stale
  let historyDebounce: number | undefined;
  const historyPageSize = Math.min(10_000, Math.max(1, Number(route.query.get("page_size")) || HISTORY_PAGE_SIZE));

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
    if (mode === "history") {
      historyGeneration++;
      historyRows = [];
      historyShown = [];
      historyRange = undefined;
      historyNextAfter = undefined;
      table.reset(0);
      setHistoryStatus("idle");
      updateWaiting();
      return;
    }
    all.clear();
    shown.clear();
    table.reset(0);
    updateStats();
  });
  const stats = h("p", { class: "live-stats", id: "live-stats", role: "status", "aria-live": "off" });
  const waiting = h("div", { class: "state state-empty live-waiting", id: "drop-log-empty", "data-state": "empty" }, "No drop matches yet. New drops appear here as the enforcers report them.");

  // Mode switch and the history range.
  const title = h("h1", {}, "Live drop log");
  const modeButton = (value: Mode, label: string) =>
    h("button", { class: "button", type: "button", id: `mode-${value}`, "aria-pressed": String(mode === value), onclick: () => setMode(value) }, label);
  const liveButton = modeButton("live", "Live");
  const historyButton = modeButton("history", "History");
  const fromInput = h("input", { id: "history-from", name: "from", type: "datetime-local", step: "60" });
  const toInput = h("input", { id: "history-to", name: "to", type: "datetime-local", step: "60" });
  const historyStatus = h("div", { class: "history-status", id: "history-status", role: "status", "data-state": "idle" });
  const historyForm = h(
    "form",
    { class: "filters history-form", id: "history-form", "aria-label": "Time range of the drop log history" },
    h(
      "div",
      { class: "filter-buttons", role: "group", "aria-label": "Quick ranges" },
      QUICK_RANGES.map((r) =>
        h("button", { class: "button", type: "button", "data-range": r.key, onclick: () => chooseQuickRange(r.key) }, r.label),
      ),
    ),
    h("label", { class: "filter" }, h("span", {}, "From"), fromInput),
    h("label", { class: "filter" }, h("span", {}, "To"), toInput),
    h("div", { class: "filter-buttons" }, h("button", { class: "button primary", type: "submit", id: "history-load" }, "Show")),
    h("p", { class: "hint history-hint" }, "Workload, address, port and reason are asked of the controller; segment and search narrow what was loaded."),
  );
  historyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const range = { fromMs: fromLocalInput(fromInput.value), toMs: fromLocalInput(toInput.value) };
    const problem = rangeProblem(range);
    if (problem) {
      showHistoryProblem(problem);
      return;
    }
    void loadHistory(range as TimeRange);
  });
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
      { header: "Time", width: "116px", fill: (c, r) => setText(c, rowClock(r, mode === "history")) },
      { header: "Clock", width: "124px", fill: fillClockFlag },
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
    (index) => (mode === "live" ? shown.newest(index) : historyShown[index]),
    (row) => showDetail(row),
  );
  table.keyOf = (row) => String(row.event.id);

  replaceChildren(
    container,
    h("div", { class: "view-title" }, title, h("div", { class: "mode-switch", role: "group", "aria-label": "Drop log mode" }, liveButton, historyButton)),
    historyForm,
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
    historyStatus,
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
      rowFlag(row) ? h("p", { class: "clock-warning", id: "detail-clock-flag" }, h("span", { class: "badge badge-warn" }, rowFlag(row)?.label ?? ""), " ", rowFlag(row)?.tooltip ?? "") : null,
      h("pre", { class: "json" }, JSON.stringify(e, null, 2)),
    );
  }

  // --- history ----------------------------------------------------------------------------
  /** Workload, address, port and reason: the controller filters on them in history mode. */
  function serverFilters(c: DropCriteria) {
    return { workload: c.workload, address: c.address, port: c.port, reason: c.reason };
  }

  function chooseQuickRange(key: string): void {
    const range = quickRange(key, Date.now());
    if (range) {
      fromInput.value = toLocalInput(range.fromMs);
      toInput.value = toLocalInput(range.toMs);
      void loadHistory(range);
    }
  }

  function setHistoryStatus(state: string, ...children: (Node | string)[]): void {
    historyStatus.dataset.state = state;
    historyStatus.className = `history-status history-${state}` + (state === "error" ? " state state-error" : "");
    historyStatus.setAttribute("role", state === "error" ? "alert" : "status");
    replaceChildren(historyStatus, ...children);
  }

  function showHistoryProblem(problem: string): void {
    historyGeneration++;
    setHistoryStatus("invalid", problem);
  }

  function describeRange(range: TimeRange): string {
    const filters = serverFilters(criteria);
    const parts = Object.entries(filters).filter(([, v]) => v.trim() !== "").map(([k, v]) => `${k} ${v.trim()}`);
    return `from ${formatTime(new Date(range.fromMs).toISOString())} to ${formatTime(new Date(range.toMs).toISOString())}` + (parts.length ? ` (${parts.join(", ")})` : "");
  }

  /** Loads the range page by page (forward by id), up to HISTORY_LOAD_CAP more events. */
  async function loadHistory(range: TimeRange, continueAfter?: number): Promise<void> {
    const generation = ++historyGeneration;
    const filters = serverFilters(criteria);
    if (continueAfter === undefined) {
      historyRange = range;
      historyRows = [];
      historyShown = [];
      historyPages = 0;
      historyOther = 0;
      historyNextAfter = undefined;
      if (mode === "history") {
        table.reset(0);
      }
      rememberRange(range);
    }
    historyQuery = JSON.stringify(filters);
    let after = continueAfter;
    let loaded = 0;
    const fresh: LiveRow[] = [];
    setHistoryStatus("loading", h("span", { class: "spinner", "aria-hidden": "true" }), `Loading drops ${describeRange(range)}…`);
    updateWaiting();
    try {
      for (;;) {
        const page = await api.get<EventPage>("/events" + historyPageQuery(range, filters, historyPageSize, after));
        if (generation !== historyGeneration) {
          return;
        }
        historyPages++;
        for (const event of page.events) {
          if (isDropLog(event)) {
            fresh.push({ seq: nextSeq++, event });
          } else {
            historyOther++;
          }
        }
        loaded += page.events.length;
        after = page.next_after_id;
        if (after === undefined || page.events.length === 0 || loaded >= HISTORY_LOAD_CAP) {
          break;
        }
        setHistoryStatus("loading", h("span", { class: "spinner", "aria-hidden": "true" }), `Loading drops ${describeRange(range)}… ${formatCount(historyRows.length + loaded)} so far`);
      }
    } catch (error) {
      if (generation === historyGeneration) {
        historyNextAfter = continueAfter;
        setHistoryStatus("error", h("strong", {}, "Could not load the history: "), describeError(error));
        updateWaiting();
      }
      return;
    }
    historyRows = historyRows.concat(fresh).sort((a, b) => newestFirst(a.event, b.event));
    historyNextAfter = after;
    applyHistoryFilter();
    const more = historyNextAfter !== undefined;
    setHistoryStatus(
      historyRows.length === 0 ? "empty" : "loaded",
      `${formatCount(historyRows.length)} ${historyRows.length === 1 ? "event" : "events"} ${describeRange(range)}` +
        ` · ${formatCount(historyPages)} ${historyPages === 1 ? "page" : "pages"} of up to ${formatCount(historyPageSize)}` +
        (historyShown.length !== historyRows.length ? ` · ${formatCount(historyShown.length)} match segment and search` : "") +
        (historyOther > 0 ? ` · ${formatCount(historyOther)} other events (not drops) left out` : "") +
        (more ? " · the range holds more: " : ""),
      more
        ? h("button", { class: "button small", type: "button", id: "history-more", onclick: () => historyRange && historyNextAfter !== undefined && void loadHistory(historyRange, historyNextAfter) }, `Load ${formatCount(HISTORY_LOAD_CAP)} more`)
        : "",
    );
    historyStatus.dataset.count = String(historyRows.length);
    historyStatus.dataset.shown = String(historyShown.length);
    historyStatus.dataset.pages = String(historyPages);
    historyStatus.dataset.more = String(more);
    updateWaiting();
  }

  function applyHistoryFilter(): void {
    // The server applied workload, address, port and reason already.
    const local = makeDropPredicate({ ...criteria, workload: "", address: "", port: "", reason: "" }, segments);
    historyShown = historyRows.filter((row) => local(row.event, () => rowText(row)));
    if (mode === "history") {
      table.reset(historyShown.length);
    }
  }

  /** The range in the address (without a reload), so a link or a reload shows it again. */
  function rememberRange(range: TimeRange | undefined): void {
    const search = new URLSearchParams();
    if (mode === "history") {
      search.set("mode", "history");
      if (range) {
        search.set("from", String(range.fromMs));
        search.set("to", String(range.toMs));
      }
      if (historyPageSize !== HISTORY_PAGE_SIZE) {
        search.set("page_size", String(historyPageSize));
      }
    }
    for (const key of ["workload", "segment", "address", "port", "reason", "search"] as const) {
      if (criteria[key]) {
        search.set(key, criteria[key]);
      }
    }
    const text = search.toString();
    window.history.replaceState(null, "", "#/live" + (text ? "?" + text : ""));
  }

  function updateWaiting(): void {
    if (mode === "live") {
      waiting.hidden = shown.length > 0;
      waiting.textContent = "No drop matches yet. New drops appear here as the enforcers report them.";
      return;
    }
    const state = historyStatus.dataset.state;
    waiting.hidden = historyShown.length > 0 || state === "error" || state === "invalid";
    waiting.textContent =
      state === "loading"
        ? "Loading…"
        : !historyRange || state === "idle"
          ? "Choose a time range above (a quick choice, or From and To, then Show)."
          : historyRows.length === 0
            ? `No drop was stored ${describeRange(historyRange)}.`
            : "No loaded drop matches the segment and search filters.";
  }

  function setMode(next: Mode, remember = true): void {
    mode = next;
    liveButton.setAttribute("aria-pressed", String(mode === "live"));
    historyButton.setAttribute("aria-pressed", String(mode === "history"));
    container.classList.toggle("history-mode", mode === "history");
    historyForm.hidden = mode !== "history";
    historyStatus.hidden = mode !== "history";
    stats.hidden = mode !== "live";
    pauseButton.hidden = mode !== "live";
    title.textContent = mode === "live" ? "Live drop log" : "Drop log history";
    table.reset(mode === "live" ? shown.length : historyShown.length);
    if (remember) {
      rememberRange(historyRange);
    }
    updateWaiting();
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
    if (mode === "live") {
      table.reset(shown.length);
    } else {
      applyHistoryFilter();
      // A changed server-side filter asks the controller again (once typing pauses).
      if (historyRange && JSON.stringify(serverFilters(criteria)) !== historyQuery) {
        window.clearTimeout(historyDebounce);
        const range = historyRange;
        historyDebounce = window.setTimeout(() => void loadHistory(range), 400);
      } else {
        updateWaiting();
      }
    }
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
    if (mode === "live") {
      table.setRowCount(shown.length, added);
    }
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
    if (mode === "live") {
      waiting.hidden = shown.length > 0;
    }
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
    } else if (event.altKey && event.key.toLowerCase() === "p" && mode === "live") {
      event.preventDefault();
      setPaused(!paused);
    }
  };
  window.addEventListener("keydown", onKey);

  // Seed: the newest stored drops, segments for the filter, open incidents for the links.
  void (async () => {
    try {
      const recent = await api.get<{ events: DropEvent[] }>("/events?limit=500");
      const blocked = recent.events.filter(isDropLog).reverse();
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
  setMode(mode, false);
  if (mode === "history") {
    const quick = quickRange(route.query.get("range") ?? "", Date.now());
    const range = quick ?? { fromMs: parseRouteTime(route.query.get("from")), toMs: parseRouteTime(route.query.get("to")) };
    if (range.fromMs !== undefined && range.toMs !== undefined) {
      fromInput.value = toLocalInput(range.fromMs);
      toInput.value = toLocalInput(range.toMs);
      const problem = rangeProblem(range);
      if (problem) {
        showHistoryProblem(problem);
      } else {
        void loadHistory(range as TimeRange);
      }
    }
  }

  return () => {
    offDrops();
    offLost();
    offIncident();
    window.removeEventListener("keydown", onKey);
    window.clearInterval(statsTicker);
    window.clearTimeout(statsTimer);
    window.clearTimeout(historyDebounce);
    historyGeneration++;
  };
};
