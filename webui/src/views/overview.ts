// Overview: drops per second (live), top blocked sources/destinations/ports, open incidents
// by severity, enforcer fleet health, active quarantines.
import { TimeSeriesChart } from "../charts/time_series_chart";
import type { View } from "../context";
import { badge, emptyState, errorState, h, link, loadingState, replaceChildren, section, table } from "../dom";
import { formatAge, formatCount, formatTime } from "../format";
import { BlockedTraffic, PerSecondSeries, isBlockedDrop } from "../live/drop_statistics";
import type { DropEvent, Enforcer, EventCounts, Incident, Quarantine, Severity } from "../types";
import { keepFresh } from "./refresh";

const WINDOW_SECONDS = 300;
const SEVERITIES: Severity[] = ["critical", "high", "medium", "low"];

export const overviewView: View = (container, context) => {
  const { api, stream } = context;
  const rateNow = h("span", { class: "figure", id: "drop-rate-now" }, "–");
  const chartBox = h("div", { class: "chart", id: "drop-rate-chart" });
  const topBox = h("div", { class: "top-lists" }, loadingState("recent drops"));
  const incidentsBox = h("div", {}, loadingState("incidents"));
  const fleetBox = h("div", {}, loadingState("enforcers"));
  const quarantineBox = h("div", {}, loadingState("quarantines"));
  replaceChildren(
    container,
    h("h1", {}, "Overview"),
    h(
      "div",
      { class: "grid overview-grid" },
      section("Drops per second", h("p", { class: "figure-line" }, "Now: ", rateNow, " drops/s (5 s average), last 5 minutes"), chartBox),
      section("Open incidents by severity", incidentsBox),
      section("Top blocked (last 15 minutes)", topBox),
      section("Enforcer fleet", fleetBox),
      section("Active quarantines", quarantineBox),
    ),
  );

  const series = new PerSecondSeries(WINDOW_SECONDS);
  const blocked = new BlockedTraffic();
  const chart = new TimeSeriesChart(chartBox, { label: "drops/s", unit: "/s", height: 220 });
  let seeded = false;

  const seed = async () => {
    const now = Date.now();
    try {
      const [counts, recent] = await Promise.all([
        api.get<EventCounts>(`/events/counts?from=${now - WINDOW_SECONDS * 1000}&to=${now + 1000}&bucket_ms=1000`),
        api.get<{ events: DropEvent[] }>(`/events?from=${now - 15 * 60 * 1000}&limit=5000`),
      ]);
      for (const bucket of counts.buckets) {
        series.add(bucket.start_ns / 1e6, bucket.events, now);
      }
      for (const event of recent.events) {
        if (isBlockedDrop(event)) {
          blocked.add(event);
        }
      }
      seeded = true;
      renderTop();
    } catch (error) {
      replaceChildren(topBox, errorState(error, () => void seed()));
    }
  };

  const renderTop = () => {
    const list = (title: string, id: string, rows: { key: string; count: number }[]) =>
      h(
        "div",
        { class: "top-list", id },
        h("h3", {}, title),
        rows.length === 0
          ? emptyState("No blocked traffic.")
          : h("ol", {}, rows.map((r) => h("li", {}, h("span", { class: "key" }, r.key), h("span", { class: "count" }, formatCount(r.count))))),
      );
    replaceChildren(
      topBox,
      list("Sources", "top-sources", blocked.sources.top(8)),
      list("Destinations", "top-destinations", blocked.destinations.top(8)),
      list("Ports", "top-ports", blocked.ports.top(8)),
    );
  };

  const offDrops = stream.on("drops", (events) => {
    const now = Date.now();
    for (const event of events) {
      if (isBlockedDrop(event)) {
        series.addEvent(event, now);
        blocked.add(event);
      }
    }
  });
  const renderRate = () => {
    const now = Date.now();
    const { times, values } = series.snapshot(now);
    chart.setData(times, values);
    chartBox.dataset.total = String(values.reduce((a, b) => a + b, 0));
    rateNow.textContent = formatCount(Math.round(series.recentRate(now)));
  };
  const tick = window.setInterval(() => {
    renderRate();
    if (seeded) {
      renderTop();
    }
  }, 1000);
  renderRate();
  void seed().then(renderRate);

  const stopIncidents = keepFresh(
    context,
    async () => {
      try {
        const [open, acknowledged] = await Promise.all([
          api.get<{ incidents: Incident[] }>("/incidents?state=open&limit=1000"),
          api.get<{ incidents: Incident[] }>("/incidents?state=acknowledged&limit=1000"),
        ]);
        const counts = (list: Incident[], severity: Severity) => list.filter((i) => i.severity === severity).length;
        replaceChildren(
          incidentsBox,
          h(
            "table",
            { class: "data-table severity-table", id: "incidents-by-severity" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Severity"), h("th", { scope: "col" }, "Open"), h("th", { scope: "col" }, "Acknowledged"))),
            h(
              "tbody",
              {},
              SEVERITIES.map((s) =>
                h("tr", {}, h("td", {}, badge(s, s)), h("td", { "data-severity": s }, h("a", { href: `#/incidents?state=open&severity=${s}` }, String(counts(open.incidents, s)))), h("td", {}, String(counts(acknowledged.incidents, s)))),
              ),
            ),
          ),
          open.incidents.length > 0 ? h("p", {}, "Newest: ", link(`#/incidents/${open.incidents[0].id}`, open.incidents[0].title), ` (${formatAge(open.incidents[0].opened_at)})`) : null,
        );
      } catch (error) {
        replaceChildren(incidentsBox, errorState(error));
      }
    },
    { intervalMs: 10000, on: ["incident"] },
  );

  const stopFleet = keepFresh(
    context,
    async () => {
      try {
        const { enforcers } = await api.get<{ enforcers: Enforcer[] }>("/enforcers");
        const healthy = enforcers.filter((e) => e.connected && e.in_sync).length;
        replaceChildren(
          fleetBox,
          h("p", { class: "figure-line", id: "fleet-health" }, h("span", { class: "figure" }, `${healthy}/${enforcers.length}`), " connected and in sync"),
          enforcers.length === 0
            ? emptyState("No enforcer enrolled yet.")
            : table<Enforcer>(
                [
                  { header: "Enforcer", cell: (e) => e.id },
                  { header: "State", cell: (e) => (e.connected ? (e.in_sync ? badge("in sync", "ok") : badge("out of sync", "warn")) : badge("disconnected", "bad")) },
                  { header: "Generation", cell: (e) => `${e.applied_generation ?? "–"} / ${e.desired_generation}` },
                  { header: "Heartbeat", cell: (e) => formatAge(e.last_heartbeat) },
                ],
                enforcers,
              ),
        );
      } catch (error) {
        replaceChildren(fleetBox, errorState(error));
      }
    },
    { intervalMs: 5000, on: ["enforcer", "policy"] },
  );

  const stopQuarantines = keepFresh(
    context,
    async () => {
      try {
        const { quarantines } = await api.get<{ quarantines: Quarantine[] }>("/quarantines");
        replaceChildren(
          quarantineBox,
          quarantines.length === 0
            ? emptyState("No workload is in quarantine.")
            : table<Quarantine>(
                [
                  { header: "Workload", cell: (q) => link(`#/workloads/${encodeURIComponent(q.workload)}`, q.workload) },
                  {
                    header: "By",
                    cell: (q) =>
                      q.contained_by === "kernel"
                        ? "contained by the kernel"
                        : q.automatic
                          ? `${q.actor} (automatic)`
                          : q.actor,
                  },
                  { header: "Since", cell: (q) => formatTime(q.created_at) },
                  { header: "Applied", cell: (q) => q.enforcers.map((e) => badge(`${e.enforcer}: ${e.state}`, e.state === "applied" ? "ok" : "warn")) },
                ],
                quarantines,
              ),
        );
      } catch (error) {
        replaceChildren(quarantineBox, errorState(error));
      }
    },
    { intervalMs: 10000, on: ["quarantine", "enforcer"] },
  );

  return () => {
    offDrops();
    window.clearInterval(tick);
    chart.destroy();
    stopIncidents();
    stopFleet();
    stopQuarantines();
  };
};
