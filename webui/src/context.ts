// What every view gets: the API client, the live stream, who is signed in, and navigation.
import type { ApiClient } from "./api";
import type { ConnectivityMonitor } from "./connectivity";
import type { LiveStream } from "./live_stream";
import type { Permission } from "./permissions";
import type { Whoami } from "./types";

export interface AppContext {
  api: ApiClient;
  stream: LiveStream;
  connectivity: ConnectivityMonitor;
  user: Whoami;
  can(permission: Permission): boolean;
  navigate(hash: string): void;
}

/** A view renders into `container` and returns what to undo when the user leaves it. */
export type ViewCleanup = () => void;
export type View = (container: HTMLElement, context: AppContext, route: RouteMatch) => ViewCleanup | void;

export interface RouteMatch {
  params: string[];
  query: URLSearchParams;
}
