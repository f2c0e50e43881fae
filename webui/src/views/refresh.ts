// Keeps a view's data fresh: load now, again every `intervalMs`, and soon after a stream
// event that says it changed (debounced so a storm costs one reload).
import type { AppContext } from "../context";
import type { StreamEventName } from "../live_stream";

export function keepFresh(context: AppContext, load: () => Promise<void>, options: { intervalMs: number; on?: StreamEventName[] }): () => void {
  let running = false;
  let again = false;
  let debounce: number | undefined;
  let stopped = false;
  const run = async () => {
    if (stopped) {
      return;
    }
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await load();
    } finally {
      running = false;
      if (again && !stopped) {
        again = false;
        void run();
      }
    }
  };
  const soon = () => {
    window.clearTimeout(debounce);
    debounce = window.setTimeout(() => void run(), 300);
  };
  const unsubscribers = (options.on ?? []).map((name) => context.stream.on(name, soon));
  const unsubscribeConnectivity = context.connectivity.subscribe((state) => {
    if (state.up) {
      soon();
    }
  });
  const timer = window.setInterval(() => void run(), options.intervalMs);
  void run();
  return () => {
    stopped = true;
    window.clearInterval(timer);
    window.clearTimeout(debounce);
    unsubscribers.forEach((u) => u());
    unsubscribeConnectivity();
  };
}
