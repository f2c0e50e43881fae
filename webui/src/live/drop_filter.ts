// The live view's filter: the criteria a user typed, turned into one predicate over drops.
import type { DropEvent } from "../types";
import type { SegmentIndex } from "./segment_index";

export interface DropCriteria {
  workload: string;
  segment: string;
  address: string;
  port: string;
  reason: string;
  search: string;
}

export const NO_CRITERIA: DropCriteria = { workload: "", segment: "", address: "", port: "", reason: "", search: "" };

export function searchableText(event: DropEvent): string {
  return [event.workload, event.src, event.dst, event.proto_name, event.dport, event.reason, event.enforcer, event.indev, event.outdev, event.type, event.direction]
    .filter((v) => v !== undefined && v !== "")
    .join(" ")
    .toLowerCase();
}

export function makeDropPredicate(criteria: DropCriteria, segments: SegmentIndex | undefined): (event: DropEvent, text: () => string) => boolean {
  const workload = criteria.workload.trim();
  const segment = criteria.segment.trim();
  const address = criteria.address.trim();
  const port = criteria.port.trim() === "" ? undefined : Number(criteria.port.trim());
  const reason = criteria.reason.trim();
  const terms = criteria.search.trim().toLowerCase().split(/\s+/).filter(Boolean);
  return (event, text) => {
    if (workload && event.workload !== workload) {
      return false;
    }
    if (address && event.src !== address && event.dst !== address) {
      return false;
    }
    if (port !== undefined && event.dport !== port) {
      return false;
    }
    if (reason && event.reason !== reason) {
      return false;
    }
    if (segment && (!segments || !segments.touches(segment, event))) {
      return false;
    }
    if (terms.length > 0) {
      const haystack = text();
      return terms.every((t) => haystack.includes(t));
    }
    return true;
  };
}

export function criteriaFromQuery(query: URLSearchParams): DropCriteria {
  return {
    workload: query.get("workload") ?? "",
    segment: query.get("segment") ?? "",
    address: query.get("address") ?? "",
    port: query.get("port") ?? "",
    reason: query.get("reason") ?? "",
    search: query.get("search") ?? "",
  };
}
