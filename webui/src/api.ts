// ApiClient: every REST call of the dashboard. It adds the bearer token, turns error
// envelopes into ApiError, and tells the connectivity monitor when the controller does not
// answer at all (ControllerUnreachable) or answers again.
import type { ErrorBody } from "./types";

export const API_BASE = "/api/v1";

/** The controller answered with an error envelope (4xx/5xx). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
  ) {
    super(body.message || `HTTP ${status}`);
  }
  get code(): string {
    return this.body.code;
  }
}

/** No answer: connection refused, reset, or a proxy's 502/503/504. */
export class ControllerUnreachable extends Error {}

export interface ConnectivityListener {
  reachable(): void;
  unreachable(reason: string): void;
  unauthenticated(): void;
}

export type RequestBody = { json: unknown } | { text: string } | undefined;

export class ApiClient {
  constructor(
    private readonly token: string,
    private readonly connectivity: ConnectivityListener,
  ) {}

  get bearerToken(): string {
    return this.token;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  post<T>(path: string, body?: RequestBody): Promise<T> {
    return this.request<T>("POST", path, body);
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>("DELETE", path);
  }

  async request<T>(method: string, path: string, body?: RequestBody): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    let payload: string | undefined;
    if (body && "json" in body) {
      payload = JSON.stringify(body.json);
    } else if (body && "text" in body) {
      payload = body.text;
    } else if (method === "POST" || method === "DELETE") {
      payload = "";
    }
    if (payload !== undefined && payload !== "") {
      headers["Content-Type"] = "application/json";
    }
    let response: Response;
    try {
      response = await fetch(API_BASE + path, { method, headers, body: payload, cache: "no-store" });
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.connectivity.unreachable(reason);
      throw new ControllerUnreachable(`the controller does not answer (${reason})`);
    }
    if (response.status === 502 || response.status === 503 || response.status === 504) {
      this.connectivity.unreachable(`HTTP ${response.status}`);
      throw new ControllerUnreachable(`the controller does not answer (HTTP ${response.status})`);
    }
    this.connectivity.reachable();
    const text = await response.text();
    const parsed: unknown = text ? safeParse(text) : null;
    if (!response.ok) {
      const envelope = parsed as { error?: ErrorBody } | null;
      const errorBody: ErrorBody = envelope?.error ?? { code: "http-" + response.status, message: text || response.statusText };
      if (response.status === 401) {
        this.connectivity.unauthenticated();
      }
      throw new ApiError(response.status, errorBody);
    }
    return parsed as T;
  }
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: "invalid-json-answer", message: text.slice(0, 200) } };
  }
}

/** A message for people from whatever a request threw. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    return `${error.body.message} (${error.status} ${error.code})`;
  }
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/** Unauthenticated calls: whoami at sign-in and the health probe. */
export async function fetchWhoami(token: string): Promise<{ name: string; role: string }> {
  const response = await fetch(API_BASE + "/whoami", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  const text = await response.text();
  if (!response.ok) {
    const envelope = safeParse(text) as { error?: ErrorBody };
    throw new ApiError(response.status, envelope.error ?? { code: "http-" + response.status, message: text });
  }
  return JSON.parse(text) as { name: string; role: string };
}

export async function probeHealth(timeoutMs: number): Promise<boolean> {
  const controller = new AbortController();
  const timer = window.setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(API_BASE + "/health", { cache: "no-store", signal: controller.signal });
    return response.ok;
  } catch {
    return false;
  } finally {
    window.clearTimeout(timer);
  }
}

/** Builds "?a=1&b=x" from the members that are set. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") {
      search.set(key, String(value));
    }
  }
  const text = search.toString();
  return text ? "?" + text : "";
}
