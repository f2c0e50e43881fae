// LiveStream: the controller's Server-Sent Events (/api/v1/stream) for every view of the
// session, one connection. EventSource cannot send an Authorization header; the stream
// route (and only it) accepts the token as ?access_token=. EventSource reconnects by itself
// (the server sends `retry: 2000`); while it cannot, the connectivity monitor is told.
import { API_BASE } from "./api";
import type { ConnectivityMonitor } from "./connectivity";
import type { DropEvent, Incident, Quarantine } from "./types";

export interface StreamMessages {
  drops: DropEvent[];
  incident: { action: string; incident: Incident };
  quarantine: { action: "created"; quarantine: Quarantine } | { action: "released"; workload: string };
  policy: unknown;
  inventory: unknown;
  enforcer: unknown;
  lost: { messages: number };
}

export type StreamEventName = keyof StreamMessages;
export type StreamStatus = "connecting" | "open" | "down";

const EVENT_NAMES: StreamEventName[] = ["drops", "incident", "quarantine", "policy", "inventory", "enforcer", "lost"];

export class LiveStream {
  private source: EventSource | undefined;
  private readonly handlers = new Map<StreamEventName, Set<(data: never) => void>>();
  private readonly statusListeners = new Set<(status: StreamStatus) => void>();
  private statusValue: StreamStatus = "connecting";
  private stopped = false;
  private retryTimer: number | undefined;

  constructor(
    private readonly token: string,
    private readonly connectivity: ConnectivityMonitor,
  ) {}

  get status(): StreamStatus {
    return this.statusValue;
  }

  start(): void {
    if (this.source || this.stopped) {
      return;
    }
    const source = new EventSource(`${API_BASE}/stream?access_token=${encodeURIComponent(this.token)}`);
    this.source = source;
    source.addEventListener("hello", () => {
      this.setStatus("open");
      this.connectivity.reachable();
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // A fatal answer (e.g. 401): EventSource gives up; retry on our own.
        this.source = undefined;
        window.clearTimeout(this.retryTimer);
        this.retryTimer = window.setTimeout(() => this.start(), 3000);
      }
      this.setStatus("down");
      void this.connectivity.check();
    };
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (event) => this.dispatch(name, (event as MessageEvent<string>).data));
    }
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = undefined;
    this.handlers.clear();
    this.statusListeners.clear();
  }

  on<K extends StreamEventName>(name: K, handler: (data: StreamMessages[K]) => void): () => void {
    let set = this.handlers.get(name);
    if (!set) {
      set = new Set();
      this.handlers.set(name, set);
    }
    set.add(handler as (data: never) => void);
    return () => set?.delete(handler as (data: never) => void);
  }

  onStatus(listener: (status: StreamStatus) => void): () => void {
    this.statusListeners.add(listener);
    listener(this.statusValue);
    return () => this.statusListeners.delete(listener);
  }

  private dispatch(name: StreamEventName, raw: string): void {
    const set = this.handlers.get(name);
    if (!set || set.size === 0) {
      return;
    }
    let data: unknown;
    try {
      data = JSON.parse(raw);
    } catch {
      return;
    }
    for (const handler of set) {
      (handler as (data: unknown) => void)(data);
    }
  }

  private setStatus(status: StreamStatus): void {
    if (status === this.statusValue) {
      return;
    }
    this.statusValue = status;
    for (const listener of this.statusListeners) {
      listener(status);
    }
  }
}
