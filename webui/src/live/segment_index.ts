// Which policy segments a drop touches: its workload by labels or by id, its source or
// destination address by the segment's cidrs (docs/policy-format.md, "Segments and selectors").
import type { DropEvent, PolicySegment, Workload } from "../types";
import { cidrContains, parseAddress, parseCidr, type CidrBlock } from "./address_match";

interface IndexedSegment {
  name: string;
  workloads: Set<string>;
  cidrs: CidrBlock[];
}

export class SegmentIndex {
  private readonly segments = new Map<string, IndexedSegment>();
  private readonly workloadByAddress = new Map<string, string>();

  constructor(segments: PolicySegment[], workloads: Workload[]) {
    for (const workload of workloads) {
      for (const address of workload.addresses) {
        this.workloadByAddress.set(address, workload.id);
      }
    }
    for (const segment of segments) {
      const members = new Set<string>(segment.selector?.workloads ?? []);
      const labels = segment.selector?.labels;
      if (labels && Object.keys(labels).length > 0) {
        for (const workload of workloads) {
          const matches = Object.entries(labels).every(([key, wanted]) => {
            const value = workload.labels?.[key];
            return value !== undefined && (Array.isArray(wanted) ? wanted.includes(value) : wanted === value);
          });
          if (matches) {
            members.add(workload.id);
          }
        }
      }
      const cidrs = (segment.selector?.cidrs ?? []).map(parseCidr).filter((c): c is CidrBlock => c !== undefined);
      this.segments.set(segment.name, { name: segment.name, workloads: members, cidrs });
    }
  }

  get names(): string[] {
    return [...this.segments.keys()];
  }

  /** The drop's source or destination belongs to the segment. */
  touches(segmentName: string, event: DropEvent): boolean {
    const segment = this.segments.get(segmentName);
    if (!segment) {
      return false;
    }
    if (event.workload && segment.workloads.has(event.workload)) {
      return true;
    }
    for (const address of [event.src, event.dst]) {
      if (!address) {
        continue;
      }
      const owner = this.workloadByAddress.get(address);
      if (owner && segment.workloads.has(owner)) {
        return true;
      }
      if (segment.cidrs.length > 0) {
        const parsed = parseAddress(address);
        if (parsed && segment.cidrs.some((block) => cidrContains(block, parsed))) {
          return true;
        }
      }
    }
    return false;
  }

  /** The segments a workload is a member of (for the workload page). */
  segmentsOf(workloadId: string): string[] {
    return [...this.segments.values()].filter((s) => s.workloads.has(workloadId)).map((s) => s.name);
  }
}
