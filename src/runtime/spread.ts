// SPREAD tasks submitted the way Ray's owners do it: the submitting process leases workers on
// every node that can run the task's shape (its own node's over their Unix sockets, other
// nodes' through those nodes' peer servers, authenticated with the cluster token and a
// per-lease secret), queues its tasks itself and pushes them round-robin over its leases. The
// agents take part once per lease (grant, return, loss), not once per task: the owner's agent
// only hears `direct`/`directDone` (the object directory), and no task or result crosses it.
//
// Only tiny tasks are queued here: once a lease reports tasks of 10 ms or more, what is queued
// goes to the agent, which spreads long tasks over every free CPU of the cluster, and an idle
// lease takes one at a time. When no lease can be had at all, the agent's path is taken too.
// Tasks with an environment (the job's --env, a runtimeEnv) lease workers started with it:
// pools are kept per shape, bundle and environment, and the lease request carries it.
import http from "node:http";
import net from "node:net";
import { FrameReader, FrameWriter } from "../protocol/frame.js";
import type { StoredLoc, Tagged } from "../protocol/values.js";
import type { LeaseGrant } from "../protocol/local.js";
import type { WireError } from "./errors.js";
import { cancelledError, cancelOnLease, DIRECT_OFF, exceptionRetry, handBackOutcome, leaseDepth, leaseKey, plainArgs, retriesOf, type DirectSpec } from "./direct-tasks.js";

/** A task as its submitter keeps it: the same record as a direct task's. */
export type SpreadSpec = DirectSpec;

/** What the process's core does for this submitter. */
export interface SpreadHost {
  nodeId(): string;
  jobId(): string;
  namespace(): string;
  request<T>(m: Record<string, unknown> & { t: string }): Promise<T>;
  send(m: any): void;
  /** The agent learns of a task sent to a leased worker (its result object is tracked there). */
  announce(id: string): void;
  /** A task's outcome (also reported to the agent). */
  /** `p`: a primitive result, carried as itself (see DoneMsg). */
  result(id: string, v?: Tagged, loc?: StoredLoc, err?: WireError, p?: { p?: unknown }): void;
  /** Through the agent after all, with this many retries left. */
  resubmit(id: string, spec: SpreadSpec, maxRetries: number): void;
}

interface Lease {
  pool: Pool;
  grant: LeaseGrant;
  socket?: net.Socket;
  writer?: FrameWriter;
  inflight: Map<string, SpreadSpec>;
  /** Recent task duration on this worker (EWMA, ms). */
  ms?: number;
  samples: number;
  /** Consecutive runs of 10 ms or more. */
  slow: number;
  idle?: NodeJS.Timeout;
  lostTimer?: NodeJS.Timeout;
  gone: boolean;
  connecting: boolean;
}

interface Pool {
  res: Record<string, number>;
  b?: string;
  /** The environment of its tasks (`o.env`): its leases are on workers started with it. */
  env?: Record<string, string>;
  queue: Array<{ id: string; spec: SpreadSpec } | undefined>;
  qHead: number;
  leases: Lease[];
  rr: number;
  asking: boolean;
  lastAsk: number;
  /** No lease could be had: the agent's path until then. */
  noLeaseUntil: number;
  /** Its tasks take 10 ms or more: the agent spreads them. */
  long: boolean;
  again?: NodeJS.Timeout;
  /** Leases whose connection is not up yet. */
  connecting: number;
}

/** While tasks wait here, ask for more leases this often (a node may have freed a CPU). */
const REASK_MS = 200;
/** How long a lease's connection may take to come up. */
const CONNECT_MS = 3000;
/** A lease's connection closed with tasks in flight: how long its agent has to say why. */
const LOST_GRACE_MS = 200;

const shapeKeys = new WeakMap<object, string>();

export class SpreadTasks {
  private readonly pools = new Map<string, Pool>();
  private readonly byWorker = new Map<string, Lease>();
  private readonly cancelled = new Set<string>();

  constructor(private readonly host: SpreadHost) {}

  /** Take a task (true), or leave it to the usual paths (false). */
  offer(id: string, spec: SpreadSpec): boolean {
    if (spec.o.strategy !== "SPREAD" || DIRECT_OFF || spec.res.GPU) return false;
    if (!plainArgs(spec.args)) return false;
    // (a remote function's demand object and wire options are shared by all its tasks: their key is made once)
    let shape = shapeKeys.get(spec.o);
    if (shape === undefined) shapeKeys.set(spec.o, (shape = leaseKey(spec.res, spec.o)));
    const key = shape + "|" + (spec.fn.b ?? "");
    let p = this.pools.get(key);
    if (!p) {
      p = { res: spec.res, b: spec.fn.b, env: spec.o.env as Record<string, string> | undefined, queue: [], qHead: 0, leases: [], rr: 0, asking: false, lastAsk: -Infinity, noLeaseUntil: 0, long: false, connecting: 0 };
      this.pools.set(key, p);
    }
    if (p.long) {
      const l = p.leases.find((x) => x.writer && x.inflight.size === 0);
      if (!l) return false;
      this.host.announce(id);
      this.sendTask(l, id, spec);
      return true;
    }
    if (!p.leases.length && !p.asking && performance.now() < p.noLeaseUntil) return false;
    // Owned here (the host marks it): its result comes back on the lease, not from the agent.
    this.host.announce(id);
    p.queue.push({ id, spec });
    this.pump(p);
    if (p.qHead < p.queue.length) this.ask(p);
    return true;
  }

  /** The agent reports a leased worker (or its node) gone. */
  leaseLost(worker: string, kind: string, message: string): boolean {
    const l = this.byWorker.get(worker);
    if (!l) return false;
    this.lost(l, kind, message);
    return true;
  }

  /**
   * cancel(): a task queued here is dropped; one sent to a leased worker is cancelled there
   * (`recursive`: with the tasks it submitted), or, with force, the worker's agent kills the
   * worker, on whichever node it runs (the owner's agent relays it there).
   */
  cancel(id: string, force: boolean, recursive: boolean): boolean {
    for (const p of this.pools.values()) {
      for (let i = p.qHead; i < p.queue.length; i++) {
        if (p.queue[i]?.id !== id) continue;
        this.dropQueued(p, i);
        return true;
      }
      for (const l of p.leases) {
        if (!l.inflight.has(id)) continue;
        this.cancelSent(l, id, force, recursive);
        return true;
      }
    }
    return false;
  }

  /** The task `parent` running here was cancelled recursively: cancel every SPREAD task it submitted. */
  cancelChildren(parent: string, force: boolean): void {
    for (const p of this.pools.values()) {
      for (let i = p.queue.length - 1; i >= p.qHead; i--) if (p.queue[i]?.spec.p === parent) this.dropQueued(p, i);
      for (const l of p.leases) for (const [id, spec] of l.inflight) if (spec.p === parent) this.cancelSent(l, id, force, true);
    }
  }

  private dropQueued(p: Pool, i: number): void {
    const q = p.queue[i]!;
    p.queue.splice(i, 1);
    this.host.result(q.id, undefined, undefined, cancelledError(q.spec, q.id));
  }

  private cancelSent(l: Lease, id: string, force: boolean, recursive: boolean): void {
    cancelOnLease(this.host, this.cancelled, l.writer, l.grant.worker, id, force, recursive);
  }

  // ---------------------------------------------------------------- queue

  private pump(p: Pool): void {
    // Leases granted together start together: the first to connect would take every task of a
    // short burst, and SPREAD would not spread.
    if (p.connecting > 0) return;
    while (p.qHead < p.queue.length) {
      const l = this.pick(p);
      if (!l) break;
      const q = p.queue[p.qHead]!;
      p.queue[p.qHead++] = undefined;
      this.sendTask(l, q.id, q.spec);
    }
    if (p.qHead >= p.queue.length) {
      p.queue = [];
      p.qHead = 0;
    }
  }

  /** The next lease in rotation with room: consecutive tasks go to different workers (nodes). */
  private pick(p: Pool): Lease | undefined {
    const n = p.leases.length;
    for (let k = 0; k < n; k++) {
      const l = p.leases[(p.rr + k) % n]!;
      if (l.writer && l.inflight.size < leaseDepth(l.ms)) {
        p.rr = (p.rr + k + 1) % n;
        return l;
      }
    }
    return undefined;
  }

  private sendTask(l: Lease, id: string, spec: SpreadSpec): void {
    clearTimeout(l.idle);
    l.inflight.set(id, spec);
    l.writer!.send({ t: "task", id, fn: spec.fn, args: spec.args, g: 0, job: this.host.jobId(), ns: this.host.namespace() });
  }

  /** Everything queued here goes through the agent. */
  private toAgent(p: Pool): void {
    for (let i = p.qHead; i < p.queue.length; i++) {
      const q = p.queue[i];
      if (!q) continue;
      this.host.resubmit(q.id, q.spec, retriesOf(q.spec));
    }
    p.queue = [];
    p.qHead = 0;
  }

  // ---------------------------------------------------------------- leases

  private ask(p: Pool): void {
    if (p.asking || p.again) return;
    // (20 ms at least between asks: a lease whose connection failed is not re-asked in a loop)
    const wait = p.lastAsk + (p.leases.length ? REASK_MS : 20) - performance.now();
    if (wait > 0) {
      p.again = setTimeout(() => {
        p.again = undefined;
        if (p.qHead < p.queue.length && !p.long) this.ask(p);
      }, wait);
      p.again.unref?.();
      return;
    }
    p.asking = true;
    const settle = (grants: LeaseGrant[]) => {
      p.asking = false;
      p.lastAsk = performance.now();
      for (const g of grants) this.open(p, g);
      if (!p.leases.length) {
        // No worker free anywhere: the agent queues them (and the next tasks, for a while).
        p.noLeaseUntil = performance.now() + 20;
        this.toAgent(p);
        return;
      }
      this.pump(p);
      if (p.qHead < p.queue.length) this.ask(p);
    };
    this.host.request<LeaseGrant[] | null>({ t: "leaseSpread", res: p.res, b: p.b, n: 1, ...(p.env ? { env: p.env } : {}) }).then(
      (g) => settle(Array.isArray(g) ? g : []),
      () => settle([]),
    );
  }

  private open(p: Pool, g: LeaseGrant): void {
    const l: Lease = { pool: p, grant: g, inflight: new Map(), gone: false, samples: 0, slow: 0, connecting: true };
    p.connecting++;
    p.leases.push(l);
    this.byWorker.set(g.worker, l);
    // A connection that does not come up soon is given up (its tasks wait for other leases).
    const giveUp = setTimeout(() => !l.writer && this.closed(l), CONNECT_MS);
    giveUp.unref?.();
    const attach = (socket: net.Socket, head?: Buffer) => {
      clearTimeout(giveUp);
      this.connected(l);
      if (l.gone) {
        socket.destroy();
        return;
      }
      l.socket = socket;
      socket.setNoDelay?.(true);
      const reader = new FrameReader(
        (msgs) => this.onMessages(l, msgs as Array<{ t: string; id: string; ids?: string[]; v?: Tagged; loc?: StoredLoc; err?: WireError; ms?: number }>),
        () => socket.destroy(),
      );
      socket.on("data", (c) => reader.push(c));
      socket.on("close", () => this.closed(l));
      l.writer = new FrameWriter(socket);
      if (head?.length) reader.push(head);
      this.pump(p);
      this.maybeReturn(l);
    };
    if (g.sock) {
      const s = net.createConnection(g.sock);
      s.on("error", () => {});
      s.on("connect", () => attach(s));
      s.on("close", () => !l.socket && this.closed(l));
      return;
    }
    // Another node's worker: through its agent's peer server, which pipes to the worker.
    const at = g.addr!.lastIndexOf(":");
    const req = http.request({
      host: g.addr!.slice(0, at),
      port: Number(g.addr!.slice(at + 1)),
      path: `/direct/${encodeURIComponent(g.worker)}`,
      headers: { connection: "Upgrade", upgrade: "tray-direct", authorization: `Bearer ${g.token}`, "x-tray-lease": g.secret },
    });
    req.on("upgrade", (_res, socket, head) => {
      socket.on("error", () => {});
      attach(socket, head);
    });
    req.on("response", (res) => {
      res.resume();
      this.closed(l);
    });
    req.on("error", () => this.closed(l));
    req.end();
  }

  private onMessages(l: Lease, msgs: Array<{ t: string; id: string; ids?: string[]; v?: Tagged; loc?: StoredLoc; err?: WireError; ms?: number }>): void {
    for (const m of msgs) {
      if (m?.t === "done") {
        // The first task on a worker may include importing the job's code: not a measure.
        if (typeof m.ms === "number" && l.samples++ > 0) {
          l.ms = l.ms === undefined ? m.ms : l.ms * 0.8 + m.ms * 0.2;
          // One slow run (a GC, a busy CPU) does not make tiny tasks long: several in a row do.
          l.slow = m.ms >= 10 ? l.slow + 1 : 0;
        }
        this.done(l, m.id, m.v, m.loc, m.err, "p" in m ? (m as { p?: unknown }) : undefined);
      } else if (m?.t === "returned") {
        for (const id of m.ids ?? []) this.handBack(l, id, false);
      }
    }
    const p = l.pool;
    if (!p.long && l.slow >= 3) {
      p.long = true;
      this.toAgent(p);
    }
    this.pump(p);
    this.maybeReturn(l);
  }

  private done(l: Lease, id: string, v?: Tagged, loc?: StoredLoc, err?: WireError, p?: { p?: unknown }): void {
    const spec = l.inflight.get(id);
    if (!spec) return;
    l.inflight.delete(id);
    if (this.cancelled.delete(id)) {
      err = cancelledError(spec, id);
      v = loc = p = undefined;
    } else {
      const retry = exceptionRetry(spec, err);
      if (retry !== undefined) return this.host.resubmit(id, spec, retry);
    }
    this.host.result(id, v, loc, err, p);
    // A large result left on another node: the owner's agent can rebuild it if that node dies.
    if (loc && loc.node !== this.host.nodeId()) this.host.send({ t: "directLineage", id, fn: spec.fn, args: spec.args, res: spec.res, o: spec.o });
  }

  /** A task the leased worker could not run after all (or lost with it): through the agent. */
  private handBack(l: Lease, id: string, crashed: boolean, why?: { kind: string; message: string }): void {
    const spec = l.inflight.get(id);
    if (!spec) return;
    l.inflight.delete(id);
    const next = handBackOutcome(spec, id, this.cancelled.delete(id), crashed, why);
    if ("retries" in next) this.host.resubmit(id, spec, next.retries);
    else this.host.result(id, undefined, undefined, next.err);
  }

  private maybeReturn(l: Lease): void {
    if (l.inflight.size || l.gone) return;
    const p = l.pool;
    if (p.qHead < p.queue.length) return;
    clearTimeout(l.idle);
    l.idle = setTimeout(() => {
      if (l.inflight.size || l.gone || p.qHead < p.queue.length) return;
      this.drop(l);
      this.host.send({ t: "leaseReturn", worker: l.grant.worker });
      // The other node ends the lease when its connection closes.
      l.socket?.end();
    }, 10);
  }

  /** Forget a lease (no more tasks go there). */
  private drop(l: Lease): void {
    if (l.gone) return;
    l.gone = true;
    l.writer = undefined;
    clearTimeout(l.idle);
    const p = l.pool;
    const i = p.leases.indexOf(l);
    if (i >= 0) p.leases.splice(i, 1);
    if (this.byWorker.get(l.grant.worker) === l) this.byWorker.delete(l.grant.worker);
    if (!p.leases.length) p.long = false;
  }

  /** Its connection is up, or will never be. */
  private connected(l: Lease): void {
    if (!l.connecting) return;
    l.connecting = false;
    l.pool.connecting--;
  }

  /** Its connection closed: the worker or its node went away, or we gave it back. */
  private closed(l: Lease): void {
    this.connected(l);
    const wasGone = l.gone;
    this.drop(l);
    // Never connected: the worker is still leased to us; give it back.
    if (!wasGone && !l.socket) this.host.send({ t: "leaseReturn", worker: l.grant.worker });
    // Kept findable for the agent's leaseLost, which says why.
    if (l.inflight.size) {
      this.byWorker.set(l.grant.worker, l);
      clearTimeout(l.lostTimer);
      l.lostTimer = setTimeout(
        () => this.lost(l, "WorkerCrashedError", `the worker running it (${l.grant.worker}, node ${l.grant.node.slice(0, 8)}) went away: its connection closed`),
        LOST_GRACE_MS,
      );
    }
    const p = l.pool;
    if (!wasGone && p.qHead < p.queue.length) {
      if (p.leases.length) this.pump(p);
      else this.ask(p);
    }
  }

  private lost(l: Lease, kind: string, message: string): void {
    clearTimeout(l.lostTimer);
    this.drop(l);
    if (this.byWorker.get(l.grant.worker) === l) this.byWorker.delete(l.grant.worker);
    l.socket?.destroy();
    for (const id of [...l.inflight.keys()]) this.handBack(l, id, true, { kind, message });
    const p = l.pool;
    if (p.qHead < p.queue.length) {
      if (p.leases.length) this.pump(p);
      else this.ask(p);
    }
  }
}

