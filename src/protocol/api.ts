// The head's WebSocket API: every request the CLI (or a tool) may send, with its validator.
// Frames are msgpack: requests { rid, op, ...args }, replies { rid, ok, value | error },
// events { ev, ... } (log lines of followed jobs, job ends).
import { Packr } from "msgpackr";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
export const encodeApi = (v: unknown): Buffer => packr.pack(v) as Buffer;
export const decodeApi = (b: Uint8Array): unknown => packr.unpack(b);

/** A job bundle may be this big (users of Ray hit a 100 MiB cap with an opaque error). */
export const MAX_BUNDLE_BYTES = 512 * 1024 * 1024;
export const MAX_API_FRAME_BYTES = MAX_BUNDLE_BYTES + 1024 * 1024;

export type JobStatus = "PENDING" | "RUNNING" | "SUCCEEDED" | "FAILED" | "STOPPED";

export interface JobRecord {
  id: string;
  status: JobStatus;
  entrypoint: string;
  args: string[];
  bundle: string;
  submittedAt: number;
  startedAt?: number;
  endedAt?: number;
  error?: string;
  result?: string;
  namespace: string;
}

export interface LogLine {
  seq: number;
  ts: number;
  stream: "stdout" | "stderr";
  line: string;
}

type Check = (m: Record<string, any>) => string | undefined;
const str = (k: string, opt = false): Check => (m) =>
  m[k] === undefined && opt ? undefined : typeof m[k] === "string" && m[k].length <= 4096 ? undefined : `${k} must be a string`;
const hash: Check = (m) => (typeof m.hash === "string" && /^[0-9a-f]{64}$/.test(m.hash) ? undefined : "hash must be 64 hex characters (sha256)");
const strArr = (k: string): Check => (m) =>
  Array.isArray(m[k]) && m[k].every((x: unknown) => typeof x === "string") ? undefined : `${k} must be an array of strings`;
const strMap = (k: string, opt = true): Check => (m) => {
  const v = m[k];
  if (v === undefined && opt) return undefined;
  if (typeof v !== "object" || v === null || Array.isArray(v)) return `${k} must be an object of strings`;
  return Object.values(v).every((x) => typeof x === "string") ? undefined : `${k} must be an object of strings`;
};
const int = (k: string, opt = true): Check => (m) =>
  m[k] === undefined && opt ? undefined : Number.isInteger(m[k]) && m[k] >= 0 ? undefined : `${k} must be a non-negative integer`;
const bool = (k: string, opt = true): Check => (m) => (m[k] === undefined && opt ? undefined : typeof m[k] === "boolean" ? undefined : `${k} must be true or false`);
const bytes = (k: string): Check => (m) =>
  m[k] instanceof Uint8Array ? (m[k].byteLength <= MAX_BUNDLE_BYTES ? undefined : `${k} is larger than ${MAX_BUNDLE_BYTES} bytes`) : `${k} must be bytes`;

const optBytes = (k: string): Check => (m) => (m[k] === undefined ? undefined : bytes(k)(m));

export const apiOps: Record<string, Check[]> = {
  ping: [],
  nodes: [],
  status: [],
  hasBundle: [hash],
  putBundle: [hash, bytes("data")],
  // data: the bundle itself, for a client that sends it along (otherwise putBundle first);
  // follow: this connection gets the job's log events from its first line (see agent/head/api.ts).
  submitJob: [hash, str("entrypoint"), strArr("args"), strMap("env"), str("namespace", true), optBytes("data"), bool("follow")],
  listJobs: [],
  getJob: [str("id")],
  jobLogs: [str("id"), int("fromSeq"), bool("follow")],
  unfollow: [str("id")],
  stopJob: [str("id")],
};

/** Returns an error sentence for a malformed request, or undefined. */
export function validateRequest(m: unknown): string | undefined {
  if (typeof m !== "object" || m === null || Array.isArray(m)) return "request must be an object";
  const r = m as Record<string, any>;
  if (!Number.isInteger(r.rid)) return "request has no integer rid";
  if (typeof r.op !== "string") return "request has no op";
  const checks = apiOps[r.op];
  if (!checks) return `unknown op "${r.op}" (known: ${Object.keys(apiOps).join(", ")})`;
  for (const c of checks) {
    const p = c(r);
    if (p) return `${r.op}: ${p}`;
  }
  return undefined;
}
