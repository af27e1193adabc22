// Client of the head's WebSocket API (the CLI, tests and tools use it).
import WebSocket from "ws";
import type { Duplex } from "node:stream";
import { decodeApi, encodeApi, MAX_API_FRAME_BYTES, type JobRecord, type LogLine } from "../protocol/api.js";
import { UserError } from "../errors.js";

export interface ConnectOptions {
  url: string;
  token: string;
  /** Stream to use instead of a TCP connection (an SSH tunnel). */
  createConnection?: () => Duplex;
  timeoutMs?: number;
}

export interface SubmitRequest {
  hash: string;
  entrypoint: string;
  args: string[];
  env?: Record<string, string>;
  namespace?: string;
}

export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class HeadClient {
  private rid = 0;
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private readonly logHandlers = new Map<string, { onLine: (l: LogLine) => void; onEnd: (j: JobRecord) => void; onClose?: (e: Error) => void }>();
  private closedByUs = false;

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data) => this.onMessage(data as Buffer));
    ws.on("close", (code, reason) => {
      const why = reason?.length ? `: ${reason.toString()}` : code && code !== 1000 && code !== 1005 ? ` (code ${code})` : "";
      const err = new UserError(`The connection to the head was closed${why}.`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      // A follower waits for the job's end: tell it the stream is gone instead of leaving it hanging.
      if (!this.closedByUs) for (const h of this.logHandlers.values()) h.onClose?.(err);
    });
  }

  static connect(opts: ConnectOptions): Promise<HeadClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(opts.url, {
        headers: { authorization: `Bearer ${opts.token}` },
        maxPayload: MAX_API_FRAME_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: opts.timeoutMs ?? 10_000,
        ...(opts.createConnection ? { createConnection: opts.createConnection as any } : {}),
      });
      ws.once("open", () => resolve(new HeadClient(ws)));
      ws.once("unexpected-response", (_req, res) => {
        ws.terminate();
        if (res.statusCode === 401) reject(new UserError(`The head at ${opts.url} refused the cluster token (401): the token in your cluster state does not match this cluster.`));
        else reject(new UserError(`The head at ${opts.url} answered HTTP ${res.statusCode} instead of opening its API.`));
      });
      ws.once("error", (e: any) => {
        const why = e.code === "ECONNREFUSED" ? "nothing listens there (is the cluster up? run `tray up`)" : e.message;
        reject(new UserError(`Cannot reach the head at ${opts.url}: ${why}.`));
      });
    });
  }

  private onMessage(data: Buffer): void {
    let m: any;
    try {
      m = decodeApi(data);
    } catch {
      return;
    }
    if (m.ev === "log") {
      this.logHandlers.get(m.job)?.onLine(m.line);
      return;
    }
    if (m.ev === "jobEnd") {
      this.logHandlers.get(m.job.id)?.onEnd(m.job);
      return;
    }
    const p = this.pending.get(m.rid);
    if (!p) return;
    this.pending.delete(m.rid);
    if (m.ok) p.resolve(m.value);
    else p.reject(new ApiError(m.error?.code ?? "FAILED", m.error?.message ?? "request failed"));
  }

  /** onValue runs as the reply is read, before any later message is handled. */
  request<T = unknown>(op: string, args: Record<string, unknown> = {}, onValue?: (v: T) => void): Promise<T> {
    const rid = ++this.rid;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(rid, { resolve: onValue ? (v) => (onValue(v), resolve(v)) : resolve, reject });
      this.ws.send(encodeApi({ ...args, rid, op }));
    });
  }

  /** Send raw bytes (tests of malformed input). */
  sendRaw(data: Buffer | string): void {
    this.ws.send(data);
  }

  nodes(): Promise<any[]> {
    return this.request("nodes");
  }

  status(): Promise<any> {
    return this.request("status");
  }

  async uploadBundle(hash: string, code: Uint8Array): Promise<boolean> {
    if (await this.request<boolean>("hasBundle", { hash })) return false;
    await this.request("putBundle", { hash, data: code });
    return true;
  }

  submitJob(req: SubmitRequest): Promise<JobRecord> {
    return this.request("submitJob", { ...req });
  }

  /**
   * Submit a job in as few round trips as the head allows: the submit names the bundle by
   * hash, and only a head that lacks it is sent the bytes (in a second submit). With onLine,
   * the head follows the job for this connection from before its driver starts, so every log
   * line arrives as an event as soon as it is written; `ended` resolves with the final record.
   * An older head that cannot do either gets the separate upload and follow requests.
   */
  async submitJobFollowing(
    req: SubmitRequest,
    code: Uint8Array,
    onLine?: (l: LogLine) => void,
  ): Promise<{ job: JobRecord; ended?: Promise<JobRecord> }> {
    const log = followLog(onLine ?? (() => {}));
    // Registered as the reply is read: events of the job that follow it find their handler.
    const subscribe = (j: JobRecord & { following?: boolean }) => {
      if (onLine && j.following) this.logHandlers.set(j.id, log.handler);
    };
    const submit = (extra: Record<string, unknown>) =>
      this.request<JobRecord & { following?: boolean }>("submitJob", { ...req, ...extra, ...(onLine ? { follow: true } : {}) }, subscribe);
    let job: JobRecord & { following?: boolean };
    try {
      job = await submit({});
    } catch (e) {
      if (!(e instanceof ApiError && (e.code === "NO_BUNDLE" || /was not uploaded/.test(e.message)))) throw e;
      if (e.code === "NO_BUNDLE") job = await submit({ data: code });
      else {
        await this.uploadBundle(req.hash, code);
        job = await submit({});
      }
    }
    const { following, ...record } = job;
    if (!onLine) return { job: record };
    if (!following) return { job: record, ended: this.streamLogs(record.id, true, onLine) };
    return {
      job: record,
      ended: log.ended.then(async (final) => {
        this.logHandlers.delete(record.id);
        // Lines flushed after the end event (none expected, but cheap to check).
        const rest = await this.request<{ lines: LogLine[] }>("jobLogs", { id: record.id, fromSeq: log.last() });
        for (const l of rest.lines) log.emit(l);
        return final;
      }),
    };
  }

  listJobs(): Promise<JobRecord[]> {
    return this.request("listJobs");
  }

  getJob(id: string): Promise<JobRecord> {
    return this.request("getJob", { id });
  }

  stopJob(id: string): Promise<JobRecord> {
    return this.request("stopJob", { id });
  }

  /**
   * Print a job's logs from the start; with follow, keep streaming until it ends.
   * Resolves with the job's final record (or the current one when not following).
   */
  async streamLogs(id: string, follow: boolean, onLine: (l: LogLine) => void): Promise<JobRecord> {
    const log = followLog(onLine);
    if (follow) this.logHandlers.set(id, log.handler);
    const r = await this.request<{ lines: LogLine[]; job: JobRecord; following: boolean }>("jobLogs", { id, follow });
    for (const l of r.lines) log.emit(l);
    if (!follow || !r.following) {
      this.logHandlers.delete(id);
      if (follow) {
        // It ended between our requests: fetch what was written meanwhile.
        const rest = await this.request<{ lines: LogLine[]; job: JobRecord }>("jobLogs", { id, fromSeq: log.last() });
        for (const l of rest.lines) log.emit(l);
        return rest.job;
      }
      return r.job;
    }
    const job = await log.ended;
    this.logHandlers.delete(id);
    // Lines flushed after the end event (none expected, but cheap to check).
    const rest = await this.request<{ lines: LogLine[] }>("jobLogs", { id, fromSeq: log.last() });
    for (const l of rest.lines) log.emit(l);
    return job;
  }

  close(): void {
    this.closedByUs = true;
    this.ws.close();
  }
}

/**
 * One job's log as a follower sees it: lines in order without repeats (history and live events
 * may overlap), and the job's end (its final record) or the connection's loss.
 */
function followLog(onLine: (l: LogLine) => void) {
  let last = 0;
  let onEnd!: (j: JobRecord) => void;
  let onClose!: (e: Error) => void;
  const ended = new Promise<JobRecord>((res, rej) => {
    onEnd = res;
    onClose = rej;
  });
  ended.catch(() => {}); // handled where awaited
  const emit = (l: LogLine) => {
    if (l.seq <= last) return;
    last = l.seq;
    onLine(l);
  };
  return { emit, ended, last: () => last, handler: { onLine: emit, onEnd, onClose } };
}
