// Retries for cloud API calls: only errors the cloud itself marks transient (throttling,
// 5xx, "try again" codes) are retried, with capped exponential backoff and full jitter.
// Everything else — quota, capacity, permission, validation — fails at once so the user
// sees the cloud's own error code in one sentence instead of waiting for a doomed retry.
import { UserError } from "../errors.js";

export interface RetryOptions {
  /** Attempts in all, the first included (default 6). */
  attempts?: number;
  /** First backoff ceiling in ms (default 500); doubles each retry. */
  baseMs?: number;
  /** Largest backoff in ms (default 20000). */
  maxMs?: number;
  /** Decides whether an error may be retried. */
  isTransient: (err: unknown) => boolean;
  /** Called before each wait (for progress lines / logging). */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Injected in tests. */
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Full-jitter exponential backoff: a random delay in [0, min(max, base * 2^(attempt-1))]. */
export function backoffDelay(attempt: number, baseMs = 500, maxMs = 20000, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

/** Run `fn`, retrying while `isTransient(err)` and attempts remain. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const attempts = opts.attempts ?? 6;
  const wait = opts.sleep ?? sleep;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !opts.isTransient(err)) throw err;
      const delay = backoffDelay(attempt, opts.baseMs, opts.maxMs, opts.random);
      opts.onRetry?.(err, attempt, delay);
      await wait(delay);
    }
  }
}

/** How a cloud error should be treated. */
export type ErrorClass = "transient" | "capacity" | "quota" | "permission" | "credentials" | "not-found" | "conflict" | "other";

/** A classified cloud error: the cloud's own code and message, and what it means for tray. */
export interface CloudErrorInfo {
  cls: ErrorClass;
  code: string;
  message: string;
  status?: number;
}

/** The one sentence a user sees for a cloud error that is theirs to fix. */
export function cloudUserError(cloud: string, action: string, info: CloudErrorInfo, cause?: unknown): UserError {
  const what =
    info.cls === "capacity"
      ? "the cloud has no capacity for it"
      : info.cls === "quota"
        ? "a quota of your account is exhausted"
        : info.cls === "permission"
          ? "the credentials lack permission"
          : info.cls === "credentials"
            ? "the credentials were rejected"
            : "the request failed";
  const hint =
    info.cls === "capacity"
      ? "try another availability zone, instance type or region (zones listed in the YAML are tried in order)"
      : info.cls === "quota"
        ? "request a quota increase from the cloud, or ask for fewer or smaller nodes"
        : info.cls === "permission"
          ? "grant the permission named in the message to the identity tray runs as"
          : undefined;
  const msg = oneLine(info.message);
  return new UserError(`${cloud} ${action} failed: ${what} (${info.code}: ${msg})`, { cause, ...(hint ? { hint } : {}) });
}

export function oneLine(s: string, max = 300): string {
  const t = String(s ?? "").replace(/\s+/g, " ").trim();
  return t.length > max ? t.slice(0, max - 1) + "…" : t;
}

/** Where retry notices go: stderr when TRAY_DEBUG is set (tests and `tray up` with TRAY_DEBUG=1). */
export function retryLog(line: string): void {
  if (process.env.TRAY_DEBUG) process.stderr.write(`tray: ${line}\n`);
}
