// The clock flag of a drop: the controller marks an event `clock_suspect` when the
// enforcer's clock differed from its own by more than the threshold (1 s) when the upload
// arrived (`clock_offset_ms`: the enforcer's clock minus the controller's). Such an event's
// kernel timestamp may not order correctly against other devices' logs.
import type { DropEvent } from "../types";

export interface ClockFlag {
  label: string;
  tooltip: string;
}

/** "+2.5 s", "−45 s", "+2 h 5 min": the offset for people, with its sign. */
export function formatOffset(ms: number): string {
  const sign = ms < 0 ? "−" : "+";
  const abs = Math.abs(ms);
  if (abs < 10_000) {
    return `${sign}${(abs / 1000).toFixed(1)} s`;
  }
  const seconds = Math.round(abs / 1000);
  if (seconds < 120) {
    return `${sign}${seconds} s`;
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 120) {
    return `${sign}${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return minutes % 60 === 0 ? `${sign}${hours} h` : `${sign}${hours} h ${minutes % 60} min`;
  }
  return `${sign}${Math.round(hours / 24)} d`;
}

/** The flag to show, or undefined for an event whose enforcer clock was within the threshold. */
export function clockFlag(event: DropEvent): ClockFlag | undefined {
  if (event.clock_suspect !== true) {
    return undefined;
  }
  const offset = typeof event.clock_offset_ms === "number" ? event.clock_offset_ms : undefined;
  if (offset === undefined) {
    return {
      label: "clock ?",
      tooltip: `Enforcer ${event.enforcer}'s clock was off when this upload arrived, so its kernel timestamps may not order correctly against other devices' logs.`,
    };
  }
  const direction = offset >= 0 ? "ahead of" : "behind";
  return {
    label: `clock ${formatOffset(offset)}`,
    tooltip:
      `Enforcer ${event.enforcer}'s clock was off by ${offset > 0 ? "+" : ""}${offset} ms (${direction} the controller's) when this upload arrived, ` +
      "so its kernel timestamps may not order correctly against other devices' logs (VPN, proxy, DNS, authentication).",
  };
}
