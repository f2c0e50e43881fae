// The incident's scope as a graph (Cytoscape.js): the source, the targets it tried, other
// sources that tried the same targets, and the segments they belong to. Edge colour says
// what the enforcers did: blocked (red), allowed (green), segment membership (grey).
import cytoscape from "cytoscape";
import type { IncidentScope } from "../types";

const NODE_COLOURS: Record<string, string> = { source: "#ff6b5b", target: "#5b9dff", "other-source": "#ffb347", segment: "#6c7a89" };
const EDGE_COLOURS: Record<string, string> = { blocked: "#ff6b5b", allowed: "#4caf7a", member: "#6c7a89" };

export function renderScopeGraph(container: HTMLElement, scope: IncidentScope): cytoscape.Core {
  const ids = new Set(scope.nodes.map((n) => n.id));
  const elements: cytoscape.ElementDefinition[] = [
    ...scope.nodes.map((n) => ({ group: "nodes" as const, data: { id: n.id, label: n.label || n.id, kind: n.kind } })),
    ...scope.edges
      .filter((e) => ids.has(e.source) && ids.has(e.target))
      .map((e, i) => ({
        group: "edges" as const,
        data: { id: `e${i}`, source: e.source, target: e.target, kind: e.kind, label: e.count !== undefined && e.kind !== "member" ? String(e.count) : "" },
      })),
  ];
  return cytoscape({
    container,
    elements,
    wheelSensitivity: 0.3,
    boxSelectionEnabled: false,
    style: [
      {
        selector: "node",
        style: {
          label: "data(label)",
          color: "#e6edf3",
          "font-size": 11,
          "text-valign": "bottom",
          "text-margin-y": 4,
          width: 26,
          height: 26,
          "background-color": (node: cytoscape.NodeSingular) => NODE_COLOURS[node.data("kind") as string] ?? "#999",
        },
      },
      { selector: 'node[kind = "source"]', style: { width: 38, height: 38, "border-width": 3, "border-color": "#fff" } },
      { selector: 'node[kind = "segment"]', style: { shape: "round-rectangle", width: 60, height: 22, "text-valign": "center", "text-margin-y": 0 } },
      {
        selector: "edge",
        style: {
          width: 2,
          "curve-style": "bezier",
          "target-arrow-shape": "triangle",
          "line-color": (edge: cytoscape.EdgeSingular) => EDGE_COLOURS[edge.data("kind") as string] ?? "#999",
          "target-arrow-color": (edge: cytoscape.EdgeSingular) => EDGE_COLOURS[edge.data("kind") as string] ?? "#999",
          label: "data(label)",
          "font-size": 9,
          color: "#9aa4b2",
        },
      },
      { selector: 'edge[kind = "member"]', style: { "line-style": "dashed", "target-arrow-shape": "none", width: 1 } },
    ],
    layout: { name: "cose", animate: false, padding: 20, nodeRepulsion: () => 8000, idealEdgeLength: () => 90 } as cytoscape.LayoutOptions,
  });
}
