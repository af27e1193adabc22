// Direct tasks: the submitter side of worker leases (Ray's owner-based scheduling).
//
// When this node has a free worker and nothing queued, the agent leases it to a submitter for
// tasks of one resource shape. The submitter then sends those tasks to the worker's own socket
// and it answers there: one hop each way instead of two through the agent, and no agent
// message per task at all while the results stay in the submitting process (see
// Core.announce). Tiny tasks beyond what the leased workers hold in flight wait in a queue
// here, not in the agent, and go out as results come back; while such a backlog lasts the
// submitter asks for one more lease at a time, so a burst gets every free worker of the node.
// Longer tasks (or tasks while no lease is held) go through the agent, which spreads them over
// every free CPU and node. A lease goes back when idle; a worker that dies is reported by the
// agent (`leaseLost`): its tasks are retried through the agent per maxRetries, or fail as
// they would there. Tasks with an environment (the job's `tray submit --env`, a runtimeEnv)
// lease workers started with exactly that environment: the lease request carries it, and
// leases are kept per shape and environment.
import net from "node:net";
import { FrameReader, FrameWriter, connectFrames } from "../protocol/frame.js";
import type { StoredLoc, Tagged } from "../protocol/values.js";
import type { ArgWire } from "../protocol/local.js";
import type { FnRef } from "./remote.js";
import type { WireError } from "./errors.js";

/** A task as its submitter keeps it until the result is in (what a retry resends). */
export interface DirectSpec {
  fn: FnRef;
  args: ArgWire[];
  res: Record<string, number>;
  o: Record<string, unknown>;
  p?: string;
}

/** What the direct path needs of the process's core. */
export interface DirectHost {
  readonly jobId: string;
  readonly namespace: string;
  send(m: Record<string, unknown> & { t: string }): void;
  request<T>(m: Record<string, unknown> & { t: string }): Promise<T>;
  /** A task is now on the direct path: its result comes from there (not from the agent). */
  markDirect(id: string): void;
  /** Settle a task's result locally (and tell the agent if it must know). */
  directResult(id: string, v?: Tagged, loc?: StoredLoc, err?: WireError, p?: { p?: unknown }): void;
  /** Hand a task to the agent (a retry, or one the direct path cannot run). */
  resubmit(id: string, spec: DirectSpec, maxRetries: number): void;
}

/** Tasks of one resource shape, the workers leased for them, and those waiting for a slot. */
interface LeaseClass {
  key: string;
  res: Record<string, number>;
  /** The environment its tasks run with (`o.env`: the job's and their runtimeEnv); the leased workers were started with it. */
  env?: Record<string, string>;
  leases: DirectLease[];
  backlog: Array<[string, DirectSpec] | undefined>;
  /** index of the first live entry of `backlog` */
  head: number;
  asking: boolean;
  /** When the agent last had no worker for us. */
  denied: number;
  retry?: NodeJS.Timeout;
}

interface DirectLease {
  cls: LeaseClass;
  worker: string;
  inflight: Map<string, DirectSpec>;
  writer?: FrameWriter;
  socket?: net.Socket;
  idle?: NodeJS.Timeout;
  /** When it last fell idle (nothing in flight, nothing waiting). */
  idleAt: number;
  /** Functions named on this lease's connection, by number. */
  fns: Map<FnRef, number>;
  /** The namespace the worker was last told. */
  ns?: string;
}

/** A result as a leased worker or an actor sends it back (`p`: a primitive result as itself). */
export interface DoneMsg {
  t: "done";
  id: string;
  v?: Tagged;
  loc?: StoredLoc;
  err?: WireError;
  p?: unknown;
  ms?: number;
  /** "returned": tasks the worker hands back unrun */
  ids?: string[];
}

/** TRAY_DIRECT_TASKS=0 sends every task through the agent (read once: process.env is slow). */
export const DIRECT_OFF = process.env.TRAY_DIRECT_TASKS === "0";

/** A lease nobody has used for this long goes back: it holds a CPU the agent could give others. */
const LEASE_IDLE_MS = 10;

/** Tasks shorter than this (ms) keep to one leased worker per submitter (see askLease). */
const ONE_WORKER_MS = 0.01;

/** Most tasks remembered at once to learn durations from (see wantLease). */
const LEARN_MAX = 256;

/** Most leases one submitter holds per shape (the node's free workers bound it first). */
const MAX_LEASES = 64;

export class DirectTasks {
  private readonly classes = new Map<string, LeaseClass>();
  private readonly cancelled = new Set<string>();
  /** Recent duration (EWMA, ms) of each function's tasks on leased workers (and first via the agent). */
  private readonly fnMs = new WeakMap<FnRef, number>();
  /** Tasks sent through the agent while their function's duration was unknown (see learn). */
  private readonly learning = new Map<string, FnRef>();

  constructor(private readonly host: DirectHost) {}

  /**
   * Whether tasks of this shape may take the direct path at all (worked out once per shape).
   * An environment (`o.env`) does not keep them off it: their leases are on workers started
   * with it (the caller's lease key must tell environments apart: see leaseKey).
   */
  static shapeEligible(res: Record<string, number>, o: Record<string, unknown>): boolean {
    return !(DIRECT_OFF || o.strategy || res.GPU);
  }

  /** ...and this task: see plainArgs. */
  static argsEligible(spec: DirectSpec): boolean {
    return plainArgs(spec.args);
  }

  private classOf(key: string, spec: DirectSpec): LeaseClass {
    let c = this.classes.get(key);
    if (!c) {
      const env = spec.o.env as Record<string, string> | undefined;
      this.classes.set(key, (c = { key, res: spec.res, env, leases: [], backlog: [], head: 0, asking: false, denied: -Infinity }));
    }
    return c;
  }

  /**
   * Send a task on the direct path if it can go there (a leased worker with room, or the
   * backlog of tiny tasks); false: the caller sends it through the agent. Either way a lease
   * is asked for when useful.
   */
  submit(id: string, spec: DirectSpec, key: string): boolean {
    const c = this.classOf(key, spec);
    const ms = this.fnMs.get(spec.fn);
    if (c.head === c.backlog.length) {
      const lease = this.roomiest(c, ms);
      if (lease) {
        this.push(lease, id, spec);
        return true;
      }
    }
    // Measured per function, not per resource shape: a slow function called after a burst of
    // tiny ones must not wait here behind them; it goes to the agent, which spreads it.
    if ((c.leases.length || c.asking) && ms !== undefined && ms < 2) {
      // Tiny tasks: our leased workers will be free again within moments; keep them here. So
      // too while the first lease is being asked for (after a pause let the last one go): sent
      // to the agent, the rest of a burst would fill its queue, and a node with a queue
      // grants no lease, so every burst after a pause would go the slow way. If the lease is
      // refused, the backlog goes to the agent then (askLease).
      c.backlog.push([id, spec]);
      this.host.markDirect(id);
      this.askLease(c);
      return true;
    }
    return false;
  }

  /**
   * After a task went through the agent: a lease for the tasks that follow. While its function
   * is not known to be tiny, the task is remembered so its run time (which the agent sends with
   * the result) teaches it: a first burst of tiny tasks goes through the agent, the next ones
   * wait here for leased workers.
   */
  wantLease(key: string, id: string, spec: DirectSpec): void {
    if (!((this.fnMs.get(spec.fn) ?? Infinity) < 2)) {
      // Results nobody asked for (refs dropped) never come: start afresh rather than fill up.
      if (this.learning.size >= LEARN_MAX) this.learning.clear();
      this.learning.set(id, spec.fn);
    }
    this.askLease(this.classOf(key, spec));
  }

  /** A task that went through the agent ran for `ms` on its worker (see wantLease). */
  learn(id: string, ms: number): void {
    const fn = this.learning.get(id);
    if (!fn) return;
    this.learning.delete(id);
    this.noteMs(fn, ms);
  }

  /** One more measured run of `fn` (from a leased worker, or through the agent). */
  private noteMs(fn: FnRef, ms: number): void {
    const old = this.fnMs.get(fn);
    this.fnMs.set(fn, old === undefined ? ms : old * 0.8 + ms * 0.2);
  }

  private roomiest(c: LeaseClass, ms: number | undefined): DirectLease | undefined {
    const depth = leaseDepth(ms);
    let best: DirectLease | undefined;
    for (const l of c.leases) if (l.writer && l.inflight.size < depth && (!best || l.inflight.size < best.inflight.size)) best = l;
    return best;
  }

  private push(lease: DirectLease, id: string, spec: DirectSpec): void {
    lease.inflight.set(id, spec);
    this.host.markDirect(id);
    // The function in full the first time on this lease, then by number; the job and
    // namespace when they change (the worker keeps them).
    const m: Record<string, unknown> = { t: "task", id, args: spec.args };
    let fi = lease.fns.get(spec.fn);
    if (fi === undefined) {
      lease.fns.set(spec.fn, (fi = lease.fns.size));
      m.fn = spec.fn;
    }
    m.fi = fi;
    if (lease.ns !== this.host.namespace) {
      m.job = this.host.jobId;
      m.ns = lease.ns = this.host.namespace;
    }
    lease.writer!.send(m);
  }

  /** Move waiting tasks onto leases with room; without any lease left, to the agent. */
  private drain(c: LeaseClass): void {
    while (c.head < c.backlog.length) {
      const e = c.backlog[c.head];
      if (!e) {
        c.head++; // cancelled while waiting
        continue;
      }
      const lease = this.roomiest(c, this.fnMs.get(e[1].fn));
      if (!lease) break;
      c.backlog[c.head++] = undefined;
      this.push(lease, e[0], e[1]);
    }
    if (c.head < c.backlog.length && !c.leases.some((l) => l.writer)) {
      for (; c.head < c.backlog.length; c.head++) {
        const e = c.backlog[c.head];
        c.backlog[c.head] = undefined;
        if (e) this.host.resubmit(e[0], e[1], retriesOf(e[1]));
      }
    }
    if (c.head === c.backlog.length) {
      c.backlog = [];
      c.head = 0;
    } else if (c.head > 4096 && c.head * 2 > c.backlog.length) {
      c.backlog = c.backlog.slice(c.head);
      c.head = 0;
    }
  }

  private askLease(c: LeaseClass): void {
    if (c.asking || c.leases.length >= MAX_LEASES) return;
    // Tasks this short are run by one worker faster than this process can send them: a second
    // worker would only add a process competing for the same cores.
    const next = c.backlog[c.head];
    const ms = next && this.fnMs.get(next[1].fn);
    if (c.leases.length && ms !== undefined && ms < ONE_WORKER_MS) return;
    // Refused just now: the node is busy; ask again a little later if there is still a backlog.
    const since = performance.now() - c.denied;
    if (since < 20) {
      if (c.head < c.backlog.length && !c.retry) {
        c.retry = setTimeout(() => {
          c.retry = undefined;
          if (c.head < c.backlog.length) this.askLease(c);
        }, 20 - since);
      }
      return;
    }
    c.asking = true;
    this.host.request<{ worker: string; sock: string } | null>(c.env ? { t: "lease", res: c.res, env: c.env } : { t: "lease", res: c.res }).then(
      (granted) => {
        c.asking = false;
        if (!granted) {
          c.denied = performance.now();
          if (c.head < c.backlog.length) {
            this.drain(c); // no lease at all: the backlog goes to the agent
            if (c.head < c.backlog.length) this.askLease(c);
          }
          return;
        }
        this.attach(c, granted.worker, granted.sock);
      },
      () => {
        c.asking = false;
        c.denied = performance.now();
      },
    );
  }

  private attach(c: LeaseClass, worker: string, sock: string): void {
    const lease: DirectLease = { cls: c, worker, inflight: new Map(), idleAt: performance.now(), fns: new Map() };
    c.leases.push(lease);
    const reader = new FrameReader(
      (msgs) => {
        for (const m of msgs as DoneMsg[]) {
          if (m?.t === "done") {
            const spec = typeof m.ms === "number" ? lease.inflight.get(m.id) : undefined;
            if (spec) this.noteMs(spec.fn, m.ms!);
            this.done(lease, m);
          } else if (m?.t === "returned") for (const id of m.ids ?? []) this.handBack(lease, id, false);
        }
        this.drain(c);
        this.maybeReturn(lease);
      },
      () => socket.destroy(),
    );
    const socket = connectFrames(sock, reader);
    lease.socket = socket;
    socket.on("connect", () => {
      lease.writer = new FrameWriter(socket);
      this.drain(c);
      // Still more waiting than our leases hold in flight: one more worker, if the node has one.
      if (c.head < c.backlog.length) this.askLease(c);
      this.maybeReturn(lease);
    });
    socket.on("error", () => {});
    // No more tasks go there; what was in flight is settled by "leaseLost" or "done".
    socket.on("close", () => {
      lease.writer = undefined;
      this.drain(c);
    });
  }

  private done(lease: DirectLease, m: DoneMsg): void {
    const id = m.id;
    const spec = lease.inflight.get(id);
    if (!spec) return;
    lease.inflight.delete(id);
    if (this.cancelled.delete(id)) return this.host.directResult(id, undefined, undefined, cancelledError(spec, id));
    const retry = exceptionRetry(spec, m.err);
    if (retry !== undefined) this.host.resubmit(id, spec, retry);
    else this.host.directResult(id, m.v, m.loc, m.err, "p" in m ? m : undefined);
  }

  /** A task the leased worker could not run after all: through the agent it goes. */
  private handBack(lease: DirectLease, id: string, crashed: boolean, why?: { kind: string; message: string }): void {
    const spec = lease.inflight.get(id);
    if (!spec) return;
    lease.inflight.delete(id);
    const next = handBackOutcome(spec, id, this.cancelled.delete(id), crashed, why);
    if ("retries" in next) this.host.resubmit(id, spec, next.retries);
    else this.host.directResult(id, undefined, undefined, next.err);
  }

  /** A lease nobody uses goes back soon: it holds a CPU the agent could give others. */
  private maybeReturn(lease: DirectLease): void {
    const c = lease.cls;
    if (lease.inflight.size || c.head < c.backlog.length) return;
    lease.idleAt = performance.now();
    // One timer per idle spell, not one per task: a synchronous caller's next task comes
    // within microseconds, and re-arming a timer for each would cost more than the task.
    lease.idle ??= setTimeout(() => this.idleCheck(lease), LEASE_IDLE_MS);
  }

  private idleCheck(lease: DirectLease): void {
    lease.idle = undefined;
    const c = lease.cls;
    // Busy again: maybeReturn arms the timer anew when it next falls idle.
    if (lease.inflight.size || c.head < c.backlog.length || !c.leases.includes(lease)) return;
    const left = lease.idleAt + LEASE_IDLE_MS - performance.now();
    if (left > 0) {
      lease.idle = setTimeout(() => this.idleCheck(lease), left);
      return;
    }
    this.remove(lease);
    this.host.send({ t: "leaseReturn", worker: lease.worker });
    lease.socket?.end();
  }

  private remove(lease: DirectLease): void {
    const c = lease.cls;
    const i = c.leases.indexOf(lease);
    if (i >= 0) c.leases.splice(i, 1);
    clearTimeout(lease.idle);
    lease.idle = undefined;
  }

  /** The agent says a leased worker is gone (it died, or was killed to cancel a task). */
  leaseLost(worker: string, kind: string, message: string): void {
    for (const c of this.classes.values()) {
      for (const lease of [...c.leases]) {
        if (lease.worker !== worker) continue;
        this.remove(lease);
        lease.writer = undefined;
        for (const id of [...lease.inflight.keys()]) this.handBack(lease, id, true, { kind, message });
        lease.socket?.destroy();
        this.drain(c);
      }
    }
  }

  /**
   * cancel(): a task still waiting here is cancelled at once; one sent to a leased worker is
   * cancelled there (`recursive`: with the tasks it submitted), or, with force, its worker's
   * agent kills the worker (after the worker cancelled those tasks, when recursive). False:
   * not a direct task.
   */
  cancel(id: string, force: boolean, recursive: boolean): boolean {
    for (const c of this.classes.values()) {
      for (let i = c.head; i < c.backlog.length; i++) {
        const e = c.backlog[i];
        if (e?.[0] !== id) continue;
        this.dropQueued(c, i);
        return true;
      }
      for (const lease of c.leases) {
        if (!lease.inflight.has(id)) continue;
        this.cancelSent(lease, id, force, recursive);
        return true;
      }
    }
    return false;
  }

  /** The task `parent` running here was cancelled recursively: cancel every task it sent this way. */
  cancelChildren(parent: string, force: boolean): void {
    for (const c of this.classes.values()) {
      for (let i = c.head; i < c.backlog.length; i++) if (c.backlog[i]?.[1].p === parent) this.dropQueued(c, i);
      for (const lease of c.leases) for (const [id, spec] of lease.inflight) if (spec.p === parent) this.cancelSent(lease, id, force, true);
    }
  }

  private dropQueued(c: LeaseClass, i: number): void {
    const e = c.backlog[i]!;
    c.backlog[i] = undefined;
    while (c.head < c.backlog.length && !c.backlog[c.head]) c.head++; // (no backlog left behind holes)
    this.host.directResult(e[0], undefined, undefined, cancelledError(e[1], e[0]));
  }

  private cancelSent(lease: DirectLease, id: string, force: boolean, recursive: boolean): void {
    cancelOnLease(this.host, this.cancelled, lease.writer, lease.worker, id, force, recursive);
  }
}

/**
 * The key leases are kept under: the resource shape, and the environment when there is one
 * (tasks of one shape but different environments never share a leased worker).
 */
export function leaseKey(res: Record<string, number>, o: Record<string, unknown>): string {
  return o.env ? `${JSON.stringify(res)}|${JSON.stringify(o.env)}` : JSON.stringify(res);
}

/** Tasks in flight on one leased worker: deep for tiny tasks, one at a time for long ones. */
export function leaseDepth(ms: number | undefined): number {
  if (ms === undefined || ms >= 10) return 1;
  if (ms < 0.5) return 64;
  if (ms < 2) return 16;
  return 4;
}

/**
 * Arguments a direct path can carry: values with no refs inside. A ref argument is resolved by
 * the agent, and refs nested in a value must be held by the agent while the task runs (as it
 * does for the tasks it runs); a submitter that dropped its ref would otherwise free the
 * object before the worker that received it could ask for it.
 */
export function plainArgs(args: ArgWire[]): boolean {
  for (const a of args) if ("ref" in a || ("v" in a && a.v.r?.length)) return false;
  return true;
}

export function retriesOf(spec: DirectSpec): number {
  const r = spec.o.maxRetries;
  return typeof r === "number" ? (r < 0 ? Infinity : r) : 3;
}

/**
 * Cancel a task sent to a leased worker (both lease paths): told to the worker itself, or with
 * `force` to our agent, which kills that worker wherever it runs. Once per task, though a
 * forced cancel may still follow a plain one.
 */
export function cancelOnLease(
  host: { send(m: Record<string, unknown> & { t: string }): void },
  cancelled: Set<string>,
  writer: FrameWriter | undefined,
  worker: string,
  id: string,
  force: boolean,
  recursive: boolean,
): void {
  if (!force && cancelled.has(id)) return;
  cancelled.add(id);
  if (force) host.send({ t: "cancel", id, force, recursive, worker });
  else writer?.send(recursive ? { t: "cancel", id, r: 1 } : { t: "cancel", id });
}

export function cancelledError(spec: DirectSpec, id: string): WireError {
  return { kind: "TaskCancelledError", message: `${spec.fn.n} (${id}) was cancelled` };
}

/** A task's error that retryExceptions retries: the retries left after this one; else undefined. */
export function exceptionRetry(spec: DirectSpec, err: WireError | undefined): number | undefined {
  return err?.kind === "TaskError" && spec.o.retryExceptions && retriesOf(spec) > 0 ? retriesOf(spec) - 1 : undefined;
}

/**
 * A task a leased worker gave back unrun (`crashed`: lost with its worker, `why` says how):
 * through the agent with its retries (one fewer if it crashed), or failed for good.
 */
export function handBackOutcome(
  spec: DirectSpec,
  id: string,
  cancelled: boolean,
  crashed: boolean,
  why?: { kind: string; message: string },
): { retries: number } | { err: WireError } {
  if (cancelled) return { err: cancelledError(spec, id) };
  if (!crashed) return { retries: retriesOf(spec) };
  if (retriesOf(spec) > 0) return { retries: retriesOf(spec) - 1 };
  return { err: { kind: why!.kind, message: why!.message.replace("it (", `${spec.fn.n} (`) } };
}
