// ConnectivityMonitor: whether the controller answers. A failed request or a broken event
// stream marks it down; it then probes /api/v1/health until the controller answers again.
// The shell shows a banner while it is down, never a blank page.
import { probeHealth, type ConnectivityListener } from "./api";

export type ConnectivityState = { up: true } | { up: false; since: Date; reason: string };

export class ConnectivityMonitor implements ConnectivityListener {
  private state: ConnectivityState = { up: true };
  private readonly listeners = new Set<(state: ConnectivityState) => void>();
  private probeTimer: number | undefined;
  private onUnauthenticated: () => void = () => {};

  constructor(private readonly probeIntervalMs = 2000) {}

  get current(): ConnectivityState {
    return this.state;
  }

  subscribe(listener: (state: ConnectivityState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  setUnauthenticatedHandler(handler: () => void): void {
    this.onUnauthenticated = handler;
  }

  reachable(): void {
    if (!this.state.up) {
      this.set({ up: true });
    }
  }

  unreachable(reason: string): void {
    if (this.state.up) {
      this.set({ up: false, since: new Date(), reason });
    }
    this.scheduleProbe();
  }

  unauthenticated(): void {
    this.onUnauthenticated();
  }

  /** A hint (e.g. the event stream errored): check now rather than wait for a request. */
  async check(): Promise<void> {
    const ok = await probeHealth(3000);
    if (ok) {
      this.reachable();
    } else {
      this.unreachable("no answer from /api/v1/health");
    }
  }

  stop(): void {
    window.clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.listeners.clear();
  }

  private scheduleProbe(): void {
    if (this.probeTimer !== undefined) {
      return;
    }
    this.probeTimer = window.setTimeout(async () => {
      this.probeTimer = undefined;
      if (await probeHealth(3000)) {
        this.reachable();
      } else {
        this.scheduleProbe();
      }
    }, this.probeIntervalMs);
  }

  private set(state: ConnectivityState): void {
    this.state = state;
    for (const listener of this.listeners) {
      listener(state);
    }
  }
}
