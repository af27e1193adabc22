// The node agent: local scheduler, worker pool, object directory and store of one node.
// Drivers and workers on this node talk to it over a Unix socket. On the head it also hosts
// the head services (control store, jobs, API), which plug in through `HeadHooks`.
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { FrameReader, FrameWriter } from "../../src/protocol/frame.js";
import { validateProcMessage, type AgentToProc, type ArgWire, type LeaseGrant, type ProcToAgent, type ResolvedArg } from "../../src/protocol/local.js";
import type { StoredLoc, Tagged } from "../../src/protocol/values.js";
import { encodeError } from "../../src/runtime/serialize.js";
import type { WireError } from "../../src/runtime/errors.js";
import type { FnRef } from "../../src/runtime/remote.js";
import { ObjectDirectory, type ObjEntry } from "./objects.js";
import { Queue } from "./queue.js";
import { ObjectStore } from "./store.js";
import { envKeyOf, spawnWorker, type WorkerProc, type Lease } from "./pool.js";
import { add, describe, feasible, fits, pickGpus, returnGpus, subtract, takeGpus, type Resources } from "./resources.js";
import type { GpuInfo } from "./gpu.js";

export interface Conn {
  id: number;
  socket: net.Socket;
  writer: FrameWriter;
  role?: "worker" | "driver";
  worker?: WorkerProc;
  jobId?: string;
  held: Set<string>;
  readyItems: Array<{ id: string; v?: Tagged; loc?: StoredLoc }>;
  notify(id: string, e: ObjEntry): void;
  send(m: AgentToProc): void;
}

export interface Task {
  id: string;
  fn: FnRef;
  args: ArgWire[];
  res: Resources;
  o: Record<string, any>;
  g: 0 | 1;
  parent?: string;
  job: string;
  cls: string;
  envKey: string;
  env?: Record<string, string>;
  retriesLeft: number;
  depsLeft: number;
  state: "deps" | "queued" | "running" | "done";
  worker?: WorkerProc;
  cancelled?: boolean;
  genCount?: number;
  /** Actor call: the actor and method. */
  actor?: string;
  m?: string;
  infeasibleSince?: number;
  /** Set on the node that runs a task owned by another node: where the result goes. */
  remoteOwner?: string;
  /** Set on the owner while the task runs on another node. */
  remoteNode?: string;
  /** Arguments as they arrived from another node (values or local locations). */
  pre?: ResolvedArg[];
}

export interface Actor {
  id: string;
  fn: FnRef;
  args: ArgWire[];
  res: Resources;
  o: Record<string, any>;
  job: string;
  state: "pending" | "starting" | "alive" | "restarting" | "dead";
  worker?: WorkerProc;
  gpus: number[];
  restartsLeft: number;
  /** Calls not yet sent to the worker, in order. */
  queue: Task[];
  /** Calls sent, by id. */
  inFlight: Map<string, Task>;
  deathCause?: string;
  name?: string;
  namespace?: string;
  detached: boolean;
  /** Handles created with getIfExists/name collisions point here. */
  aliasOf?: string;
  /** Owner side: the actor lives on another node. */
  home?: string;
  /** Host side: the node that created (owns) this actor. */
  remoteOwner?: string;
  /** Its constructor arguments are held (released once when it dies). */
  argsHeld?: boolean;
  /** Host side: constructor arguments as they arrived (values or local locations). */
  pre?: ResolvedArg[];
  /** The process that created it on this node (offered direct calls once it is alive). */
  creator?: Conn;
}

export interface HeadHooks {
  onJobLog(jobId: string, stream: "stdout" | "stderr", line: string): void;
  onJobDone(jobId: string, ok: boolean, err?: WireError, result?: string): void;
  nodes(): unknown[];
}

export interface AgentOptions {
  clusterName: string;
  nodeId: string;
  nodeName: string;
  nodeType: string;
  stateDir: string;
  agentScript: string;
  resources: Resources;
  gpus: GpuInfo[];
  objectStoreMemory: number;
  isHead: boolean;
  nodeIp: string;
}

const JOB_LESS = "";
const INFEASIBLE_GRACE_MS = Number(process.env.TRAY_INFEASIBLE_GRACE_MS ?? 10_000);
/** How long a worker told to cancel its running task with force has to cancel its subtasks before it is killed. */
const CANCEL_GRACE_MS = 500;

export class NodeAgent {
  readonly socketPath: string;
  readonly objects = new ObjectDirectory();
  readonly store: ObjectStore;
  readonly total: Resources;
  readonly available: Resources;
  private readonly gpuFree: number[];
  private server?: net.Server;
  private connSeq = 0;
  readonly conns = new Set<Conn>();
  readonly workers = new Map<string, WorkerProc>();
  readonly tasks = new Map<string, Task>();
  readonly queues = new Map<string, Queue<Task>>();
  private readonly leases = new Map<string, Set<WorkerProc>>();
  private readonly clsMs = new Map<string, number>();
  readonly actors = new Map<string, Actor>();
  /** Named actors (authoritative on the head): "namespace/name" -> actor id and class. */
  readonly named = new Map<string, { id: string; c: string; home?: string }>();
  /** Calls to actors that live on other nodes, in submission order per actor. */
  private readonly remoteCalls = new Map<string, Task[]>();
  private readonly locating = new Set<string>();
  net?: import("./distributed.js").Distributed;
  readonly infeasible = new Set<Task>();
  private scheduled = false;
  private lastGcHint = 0;
  private readonly prestart: number;
  head?: HeadHooks;
  readonly bundleDir: string;
  private stopping = false;
  private housekeeping?: NodeJS.Timeout;

  constructor(readonly opts: AgentOptions) {
    const short = opts.nodeId.slice(0, 8);
    this.socketPath = path.join(os.tmpdir(), `tray-${process.pid}-${short}.sock`);
    this.store = new ObjectStore(
      path.join(fs.existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), `tray-${opts.clusterName}-${short}`),
      path.join(opts.stateDir, "spill"),
      opts.objectStoreMemory,
    );
    this.bundleDir = path.join(opts.stateDir, "bundles");
    fs.mkdirSync(this.bundleDir, { recursive: true });
    this.total = { ...opts.resources };
    this.available = { ...opts.resources };
    this.gpuFree = opts.gpus.map(() => 1);
    this.prestart = Math.max(1, Math.min(Math.floor(opts.resources.CPU ?? 1), 8));
    // A ref owned by another node that something here now holds (a nested ref inside a value,
    // an argument): borrow it, so its owner keeps it while this node needs it.
    this.objects.onMissing = (id) => (this.net && this.net.ownerOf(id) !== this.opts.nodeId ? this.net.borrow(id) : undefined);
    this.objects.onFree = (e) => {
      if (e.lineage) this.holdArgs((e.lineage as Task).args, -1);
      if (e.borrowed) {
        this.net?.released(e);
        return;
      }
      if (e.loc && e.loc.node === this.opts.nodeId) this.store.free(e.id, e.loc);
      this.net?.freedOwned(e.id);
    };
  }

  async start(): Promise<void> {
    try { fs.unlinkSync(this.socketPath); } catch { /* fresh */ }
    this.server = net.createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.socketPath, () => resolve());
    });
    fs.chmodSync(this.socketPath, 0o600);
    for (let i = 0; i < this.prestart; i++) this.spawn(JOB_LESS, "", {});
    this.housekeeping = setInterval(() => this.tick(), 500);
    this.housekeeping.unref();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.housekeeping);
    for (const w of this.workers.values()) w.proc.kill("SIGKILL");
    this.server?.close();
    for (const c of this.conns) c.socket.destroy();
    try { fs.unlinkSync(this.socketPath); } catch { /* gone */ }
    // Direct sockets of workers and actors killed with the agent.
    const prefixes = [`tray-a-${process.pid}-`, `tray-w-${process.pid}-`];
    try {
      for (const f of fs.readdirSync(os.tmpdir())) if (prefixes.some((p) => f.startsWith(p))) fs.rmSync(path.join(os.tmpdir(), f), { force: true });
    } catch { /* no tmpdir listing */ }
    this.store.destroy();
  }

  /** Environment every worker and driver gets. */
  baseEnv(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      TRAY_AGENT_SOCKET: this.socketPath,
      TRAY_NODE_ID: this.opts.nodeId,
      TRAY_STORE_DIR: this.store.dir,
      TRAY_SPILL_DIR: this.store.spillDir,
      TRAY_BUNDLE_DIR: this.bundleDir,
    };
  }

  // ------------------------------------------------------------------ connections

  private accept(socket: net.Socket): void {
    socket.setNoDelay?.(true);
    const writer = new FrameWriter(socket);
    const conn: Conn = {
      id: ++this.connSeq,
      socket,
      writer,
      held: new Set(),
      readyItems: [],
      send: (m) => writer.send(m),
      notify: (id, e) => {
        if (e.loc && this.net && e.loc.node !== this.opts.nodeId) {
          // Lives on another node: copy it here first, processes read only local files. The
          // process may read the copy while it lands (a `g` location): it learns of a failed
          // transfer from the file going away, and asks again.
          let told = false;
          this.net.localize(e, (growing) => {
            told = true;
            if (conn.readyItems.length === 0) process.nextTick(() => this.flushReady(conn));
            conn.readyItems.push({ id, loc: growing });
          }).then(
            () => told || conn.notify(id, e),
            (err) => told || conn.notify(id, lostEntry(id, this.opts.nodeName, `its copy on another node could not be fetched (${err.message})`)),
          );
          return;
        }
        if (conn.readyItems.length === 0) process.nextTick(() => this.flushReady(conn));
        conn.readyItems.push(readyItem(id, e));
      },
    };
    this.conns.add(conn);
    const reader = new FrameReader(
      (msgs) => {
        for (const m of msgs) {
          const problem = validateProcMessage(m);
          if (problem) {
            console.error(`[agent] dropped a message from connection ${conn.id}: ${problem}`);
            continue;
          }
          try {
            this.onMessage(conn, m as ProcToAgent);
          } catch (e) {
            console.error(`[agent] error handling "${(m as any).t}":`, e);
          }
        }
        this.kick();
      },
      (err) => {
        console.error(`[agent] closing connection ${conn.id}: ${err.message}`);
        socket.destroy();
      },
    );
    socket.on("data", (c) => reader.push(c));
    socket.on("close", () => this.onClose(conn));
    socket.on("error", () => {});
  }

  private flushReady(conn: Conn): void {
    if (conn.readyItems.length === 0) return;
    const items = conn.readyItems;
    conn.readyItems = [];
    conn.send({ t: "ready", items });
  }

  /**
   * Lease an idle worker of this node to a submitter, which then sends it tasks of this shape
   * directly (one hop each way instead of two through the agent). Only when this node has room
   * now and nothing queued, i.e. when the agent would have run the task here at once anyway.
   * `env`: the tasks' environment (a job's --env, a runtimeEnv): only a worker started with
   * exactly it is leased, as the agent would have picked for them.
   */
  private grantLease(conn: Conn, res: Resources, env: Record<string, string> | undefined): { worker: string; sock: string } | null {
    const w = this.leasable(this.jobOf(conn), res, envKeyOf(env));
    if (!w) return null;
    subtract(this.available, res);
    this.taskStats.localLeases++;
    w.state = "direct";
    w.directOwner = conn;
    w.lease = { cls: `direct:${conn.id}`, res, gpus: [], tasks: [] };
    return { worker: w.id, sock: w.sock };
  }

  /**
   * An idle worker of the job, started with the environment of this key, that could be leased
   * for this shape now, if any. Workers with an environment are started only for tasks on the
   * agent's path (so the first tasks of such a job go there); once idle they are leased too.
   */
  private leasable(job: string, res: Resources, envKey: string): WorkerProc | undefined {
    if (process.env.TRAY_DIRECT_TASKS === "0" || this.stopping) return undefined;
    if (res.GPU) return undefined;
    // Room for the lease after everything already queued here has had its share.
    const left = { ...this.available };
    for (const q of this.queues.values()) {
      const head = q.peek();
      if (head) for (const [k, v] of Object.entries(head.res)) left[k] = (left[k] ?? 0) - v * q.length;
    }
    if (!fits(left, res)) return undefined;
    let w: WorkerProc | undefined;
    for (const x of this.workers.values()) if (x.state === "idle" && x.envKey === envKey && x.job === job && x.conn) w = x;
    if (!w) {
      w = this.idleWorker(job, envKey);
      if (!w || !w.conn) return undefined;
    }
    w.job = job;
    return w;
  }

  /**
   * What passed through this agent (nodes() shows it for the node a process runs on): tasks
   * submitted here, forwarded to other nodes, and leases granted to processes here on this
   * node's workers and on other nodes'.
   */
  readonly taskStats = { submitted: 0, forwarded: 0, localLeases: 0, remoteLeases: 0 };

  /** Owner side: workers of other nodes leased to processes here, and by whom. */
  private readonly remoteLeases = new Map<string, { conn: Conn; node: string; secret: string }>();

  /**
   * SPREAD leases for a process here: up to `n` workers on every node that can run the shape,
   * this one and the others (asked over their links; each grants what it has idle now). The
   * process then sends its tasks to them itself: this agent is not on their path.
   */
  private async grantSpread(conn: Conn, res: Resources, b: string | undefined, n: number, env: Record<string, string> | undefined): Promise<LeaseGrant[]> {
    const out: LeaseGrant[] = [];
    n = Math.min(n, 64);
    for (let i = 0; i < n; i++) {
      const g = this.grantLease(conn, res, env);
      if (!g) break;
      out.push({ worker: g.worker, sock: g.sock, node: this.opts.nodeId });
    }
    const net = this.net;
    if (!net || process.env.TRAY_DIRECT_TASKS === "0" || this.stopping || res.GPU) return out;
    const job = this.jobOf(conn);
    const others = net.nodeViews().filter((v) => v.alive && v.nodeId !== this.opts.nodeId && feasible(v.total, res));
    // A slow node does not hold up the others' leases: what it grants late is given back.
    const answers = await Promise.all(
      others.map((v) => {
        const asked = net.requestLeases(v.nodeId, res, job, b, n, env);
        return new Promise<{ v: (typeof others)[number]; g: Array<{ worker: string; secret: string }> }>((resolve) => {
          const timer = setTimeout(() => {
            resolve({ v, g: [] });
            asked.then((late) => { for (const x of late) net.sendTo(v.nodeId, { t: "leaseEnd", worker: x.worker, secret: x.secret }); }, () => {});
          }, 1500);
          asked.then(
            (g) => (clearTimeout(timer), resolve({ v, g })),
            () => (clearTimeout(timer), resolve({ v, g: [] })),
          );
        });
      }),
    );
    for (const { v, g } of answers) {
      for (const x of g) {
        // The process went away meanwhile: its leases go back.
        if (conn.socket.destroyed) {
          net.sendTo(v.nodeId, { t: "leaseEnd", worker: x.worker, secret: x.secret });
          continue;
        }
        this.remoteLeases.set(x.worker, { conn, node: v.nodeId, secret: x.secret });
        this.taskStats.remoteLeases++;
        out.push({ worker: x.worker, node: v.nodeId, addr: `${v.ip}:${v.port}`, token: net.token, secret: x.secret });
      }
    }
    return out;
  }

  /** This node's idle workers (started with `env`) leased to a process of another node (its agent asked). */
  grantRemoteLeases(owner: string, res: Resources, job: string, n: number, env: Record<string, string> | undefined): Array<{ worker: string; secret: string }> {
    const out: Array<{ worker: string; secret: string }> = [];
    const envKey = envKeyOf(env);
    for (let i = 0; i < Math.min(n, 64); i++) {
      const w = this.leasable(job, res, envKey);
      if (!w) break;
      subtract(this.available, res);
      w.state = "direct";
      w.lease = { cls: `remote:${owner}`, res, gpus: [], tasks: [] };
      const rl: NonNullable<WorkerProc["remoteLease"]> = { owner, secret: crypto.randomBytes(18).toString("base64url") };
      // Nobody connected: the grant went astray (the process died, a reply was lost).
      rl.timer = setTimeout(() => !rl.socket && this.endRemoteLease(w!, rl), 10_000);
      rl.timer.unref();
      w.remoteLease = rl;
      out.push({ worker: w.id, secret: rl.secret });
    }
    return out;
  }

  /** A lease to another node's process is over (its connection closed, or its owner died). */
  endRemoteLease(w: WorkerProc, rl: NonNullable<WorkerProc["remoteLease"]>): void {
    if (w.remoteLease !== rl) return;
    w.remoteLease = undefined;
    clearTimeout(rl.timer);
    rl.socket?.destroy();
    if (w.state === "direct") this.endLeaseUnlessCancelling(w);
  }

  /** A direct lease whose holder is gone or gave it back. */
  private endLeaseUnlessCancelling(w: WorkerProc): void {
    // Still cancelling what it runs for that holder (its subtasks first, then it is killed):
    // it stays out of the pool until that is settled (see settleOrphan), so no other task is
    // given to a worker about to be killed.
    if (w.cancelKills?.size) {
      w.directOwner = undefined;
      return;
    }
    this.endLease(w);
  }

  /** A leased worker whose holder went away while a cancel was pending: back to the pool once settled. */
  private settleOrphan(w: WorkerProc): void {
    if (w.cancelKills?.size || w.state !== "direct" || w.directOwner || w.remoteLease) return;
    this.endLease(w);
  }

  /**
   * A forced cancel of the task `id` running on worker `w` (leased or on the agent's path).
   * Not recursive: the worker is killed now. Recursive: the tasks it submitted for `id` must
   * be cancelled first, and only the worker knows those on its direct paths (leased workers
   * here and on other nodes): it is told (`cancel` with `f`), cancels them and answers
   * `cancelAck`, and is killed then. A worker that does not answer within CANCEL_GRACE_MS
   * (its event loop is busy in the task's synchronous code) is killed anyway, after the tasks
   * this agent knows as children of `id` are cancelled.
   */
  private killForCancel(w: WorkerProc, id: string, recursive: boolean): void {
    if (!recursive) {
      w.proc.kill("SIGKILL");
      return;
    }
    const kills = (w.cancelKills ??= new Map());
    if (kills.has(id)) return;
    (w.conn as Conn | undefined)?.send({ t: "cancel", id, r: 1, f: 1 });
    const timer = setTimeout(() => {
      kills.delete(id);
      if (w.state === "dead") return;
      this.cancelChildren(id, true);
      w.proc.kill("SIGKILL");
    }, CANCEL_GRACE_MS);
    timer.unref();
    kills.set(id, timer);
  }

  /** Cancel the tasks this agent knows whose parent is `id` (and theirs). */
  private cancelChildren(id: string, force: boolean): void {
    for (const c of this.tasks.values()) if (c.parent === id) this.cancel(c.id, force, true);
  }

  /** A lease granted to another node's process is given back (or was never wanted): its owner says so. */
  leaseEnd(worker: string, secret: string): void {
    const w = this.workers.get(worker);
    const rl = w?.remoteLease;
    if (w && rl && rl.secret === secret) this.endRemoteLease(w, rl);
  }

  /** Owner side: a worker leased to a process here died on its node. */
  onRemoteLeaseLost(worker: string, kind: string, message: string): void {
    const r = this.remoteLeases.get(worker);
    if (!r) return;
    this.remoteLeases.delete(worker);
    r.conn.send({ t: "leaseLost", worker, kind, message });
  }

  private endLease(w: WorkerProc): void {
    const lease = w.lease!;
    add(this.available, w.blocked ? nonCpuPart(lease.res) : lease.res);
    w.lease = undefined;
    w.blocked = false;
    w.directOwner = undefined;
    w.state = "idle";
    w.idleSince = Date.now();
    this.kick();
  }

  private onClose(conn: Conn): void {
    this.conns.delete(conn);
    for (const [worker, r] of this.remoteLeases) if (r.conn === conn) this.remoteLeases.delete(worker);
    for (const w of this.workers.values()) if (w.state === "direct" && w.directOwner === conn) this.endLeaseUnlessCancelling(w);
    for (const id of conn.held) this.objects.decr(id);
    conn.held.clear();
    // subscriptions of a dead connection are dropped lazily (notify on a closed writer is a no-op)
  }

  private onMessage(conn: Conn, m: ProcToAgent): void {
    switch (m.t) {
      case "hello": {
        conn.role = m.role;
        if (m.role === "driver" && m.job) conn.jobId = m.job;
        if (m.role === "worker" && m.workerId) {
          const w = this.workers.get(m.workerId);
          if (w) {
            w.conn = conn;
            conn.worker = w;
            if (w.state === "starting") w.state = "idle";
            const cbs = w.onReady;
            w.onReady = [];
            for (const cb of cbs) cb();
          }
        }
        return;
      }
      case "put": {
        const e = this.objects.create(m.id);
        conn.held.add(m.id);
        this.objects.resolve(e.id, m.v, undefined);
        return;
      }
      case "seal": {
        const e = this.objects.create(m.id);
        conn.held.add(m.id);
        this.store.add(m.id, m.loc);
        this.objects.resolve(e.id, undefined, m.loc);
        this.maybeHintGc();
        return;
      }
      case "addref":
        for (const id of m.ids) {
          if (conn.held.has(id)) continue;
          if (!this.objects.get(id)) {
            if (!this.net || this.net.ownerOf(id) === this.opts.nodeId) continue;
            this.net.borrow(id);
          }
          conn.held.add(id);
          this.objects.incr(id);
        }
        return;
      case "decref":
        for (const id of m.ids) {
          if (!conn.held.delete(id)) continue;
          this.objects.decr(id);
        }
        return;
      case "sub":
        for (const id of m.ids) this.subscribe(conn, id);
        return;
      case "unsub":
        for (const id of m.ids) {
          const e = this.objects.get(id);
          e?.subs?.delete(conn);
          if (conn.held.delete(id)) this.objects.decr(id);
        }
        return;
      case "submit":
        this.submit(conn, m);
        return;
      case "done":
        this.onDone(conn, m);
        return;
      case "yield":
        this.onYield(m);
        return;
      case "blocked":
        this.onBlocked(conn, m.returned);
        return;
      case "unblocked": {
        const w = conn.worker;
        if (w?.blocked && w.lease) {
          w.blocked = false;
          subtract(this.available, cpuPart(w.lease.res));
        }
        return;
      }
      case "createActor":
        this.createActor(conn, m);
        return;
      case "call":
        this.callActor(conn, m);
        return;
      case "actorReady":
        this.onActorReady(conn, m.actor, m.err);
        return;
      case "kill":
        this.killActor(m.actor, m.noRestart, "it was killed with kill()");
        return;
      case "cancel":
        if (m.worker) {
          // A task this process sent to a worker leased to it: only that worker knows it, and
          // only a forced cancel comes here (the process tells the worker itself otherwise).
          if (!m.force) return;
          const w = this.workers.get(m.worker);
          if (w?.state === "direct" && w.directOwner === conn) {
            this.killForCancel(w, m.id, m.recursive);
            return;
          }
          // A worker of another node: its agent kills it (the lease's secret says it is ours).
          const r = this.remoteLeases.get(m.worker);
          if (r?.conn === conn) this.net?.sendTo(r.node, { t: "cancelLeased", id: m.id, worker: m.worker, secret: r.secret, recursive: m.recursive });
          return;
        }
        this.cancel(m.id, m.force, m.recursive);
        return;
      case "cancelAck": {
        // A worker told to cancel its running task with force has cancelled what it submitted.
        const w = conn.worker;
        const timer = w?.cancelKills?.get(m.id);
        if (!w || !timer) return;
        clearTimeout(timer);
        w.cancelKills!.delete(m.id);
        if (m.kill) w.proc.kill("SIGKILL");
        else this.settleOrphan(w);
        return;
      }
      case "lease":
        conn.send({ t: "rep", rid: m.rid, value: this.grantLease(conn, m.res, m.env) });
        return;
      case "leaseReturn": {
        const w = this.workers.get(m.worker);
        if (w?.state === "direct" && w.directOwner === conn) this.endLease(w);
        const r = this.remoteLeases.get(m.worker);
        if (r?.conn === conn) {
          // Ended there now, before any later lease request of ours on the same link arrives
          // (the closing of the process's own connection to it may come later).
          this.remoteLeases.delete(m.worker);
          this.net?.sendTo(r.node, { t: "leaseEnd", worker: m.worker, secret: r.secret });
        }
        return;
      }
      case "leaseSpread":
        this.grantSpread(conn, m.res, m.b, m.n, m.env).then(
          (value) => conn.send({ t: "rep", rid: m.rid, value }),
          () => conn.send({ t: "rep", rid: m.rid, value: [] }),
        );
        return;
      case "directLineage": {
        // A large result of a task run by a leased worker of another node: if that node dies
        // before the object is read here, the task runs again (as for forwarded tasks).
        const e = this.objects.get(m.id);
        if (!e || !e.loc || e.loc.node === this.opts.nodeId || e.lineage) return;
        const job = this.jobOf(conn);
        // (rebuilt on a worker with the task's environment, as any task of it)
        const env = m.o.env as Record<string, string> | undefined;
        const envKey = envKeyOf(env);
        const t: Task = {
          id: m.id, fn: m.fn, args: m.args, res: m.res, o: m.o, g: 0, job, envKey, env, cls: `${job}|${JSON.stringify(m.res)}|${envKey}`,
          retriesLeft: typeof m.o.maxRetries === "number" ? (m.o.maxRetries < 0 ? Infinity : m.o.maxRetries) : 3,
          depsLeft: 0, state: "done",
        };
        this.holdArgs(t.args, +1);
        e.lineage = t;
        return;
      }
      case "getActor": {
        const key = `${m.namespace}/${m.name}`;
        const missing = { kind: "TaskError", causeName: "ValueError", message: `no actor named "${m.name}" in namespace "${m.namespace}"` };
        const answer = (found: { id: string; c: string; home?: string } | undefined) => {
          if (found?.home) this.net?.noteHome(found.id, found.home);
          conn.send(found ? { t: "rep", rid: m.rid, value: { id: found.id, c: found.c } } : { t: "rep", rid: m.rid, err: missing });
        };
        const headLink = !this.head && this.net?.headLink();
        if (headLink) headLink.request<{ id: string; c: string } | undefined>({ t: "lookupName", key }).then(answer, () => answer(undefined));
        else answer(this.lookupName(key));
        return;
      }
      case "cluster": {
        let value: unknown;
        const all = this.clusterNodes();
        if (m.what === "nodes") value = all;
        else value = sumResources(all.filter((n) => n.alive).map((n) => (m.what === "total" ? n.resources : n.available)));
        conn.send({ t: "rep", rid: m.rid, value });
        return;
      }
      case "jobDone":
        if (conn.jobId) this.head?.onJobDone(conn.jobId, m.ok, m.err, m.result);
        return;
      case "pg":
        this.net?.pgRequest(conn, m);
        return;
      case "direct":
        // A call that went straight to the actor: track its result like any other object.
        this.objects.create(m.id);
        conn.held.add(m.id);
        return;
      case "directDone":
        if (m.loc && m.loc.node !== this.opts.nodeId) this.net?.adopt(m.id, m.loc, !!this.objects.get(m.id));
        else if (m.loc) this.store.add(m.id, m.loc);
        this.objects.resolve(m.id, m.err ? encodeError(m.err) : m.v, m.loc);
        return;
    }
  }

  nodeInfo() {
    return {
      nodeId: this.opts.nodeId,
      name: this.opts.nodeName,
      nodeType: this.opts.nodeType,
      address: this.opts.nodeIp,
      alive: true,
      isHead: this.opts.isHead,
      resources: { ...this.total },
      available: { ...this.available },
      gpus: this.opts.gpus,
      // objects: entries of this agent's directory (results kept by their submitters are not there)
      store: { ...this.store.stats(), objects: this.objects.entries.size },
      workers: this.workers.size,
      taskStats: { ...this.taskStats } as NodeAgent["taskStats"] | undefined,
      pending: this.pendingDemand(),
      queuedCount: this.queuedCount(),
    };
  }

  /** Tasks waiting in this node's queues (cheap: one addition per scheduling class). */
  queuedCount(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  /** Every node as users see it (nodes(), tray status): from the cluster view when clustered. */
  clusterNodes(): Array<ReturnType<NodeAgent["nodeInfo"]>> {
    if (!this.net) return [this.nodeInfo()];
    const me = this.nodeInfo();
    return this.net.nodeViews().map((v) =>
      v.nodeId === me.nodeId
        ? me
        : {
            nodeId: v.nodeId,
            name: v.name,
            nodeType: v.nodeType,
            address: v.ip,
            alive: v.alive,
            isHead: v.isHead,
            resources: v.total,
            available: v.available,
            gpus: (v.gpus ?? []) as GpuInfo[],
            store: v.store as ReturnType<ObjectStore["stats"]> & { objects: number },
            workers: v.workers ?? 0,
            pending: (v.pending ?? []) as ReturnType<NodeAgent["pendingDemand"]>,
            queuedCount: v.queued,
            taskStats: undefined,
          },
    );
  }

  pendingDemand(): Array<{ resources: Resources; count: number; infeasible: boolean }> {
    const out = new Map<string, { resources: Resources; count: number; infeasible: boolean }>();
    const addTask = (t: Task, inf: boolean) => {
      const k = JSON.stringify(t.res) + inf;
      const d = out.get(k) ?? { resources: t.res, count: 0, infeasible: inf };
      d.count++;
      out.set(k, d);
    };
    // One entry per scheduling class: every task in a class has the same demand.
    for (const q of this.queues.values()) {
      const head = q.peek();
      if (!head) continue;
      const k = JSON.stringify(head.res) + false;
      const d = out.get(k) ?? { resources: head.res, count: 0, infeasible: false };
      d.count += q.length;
      out.set(k, d);
    }
    for (const t of this.infeasible) addTask(t, true);
    return [...out.values()];
  }

  subscribe(conn: Conn, id: string): void {
    let e = this.objects.get(id);
    if (!e && this.net && this.net.ownerOf(id) !== this.opts.nodeId) {
      // Owned by another node: borrow it (counted there) and learn when it is ready.
      e = this.net.borrow(id);
      if (!conn.held.has(id)) {
        conn.held.add(id);
        this.objects.incr(id);
      }
    }
    if (!e) {
      const gen = generatorItemOf(id);
      const t = gen ? this.tasks.get(gen) : undefined;
      if (t && t.state !== "done") {
        // An item the generator has not produced yet.
        e = this.objects.create(id, 1);
        conn.held.add(id);
      } else {
        conn.notify(id, lostEntry(id, this.opts.nodeName));
        return;
      }
    }
    if (e.s === 1) {
      if (e.loc) {
        this.store.restore(id, e.loc);
        this.store.touch(id);
      }
      conn.notify(id, e);
    } else {
      (e.subs ??= new Set()).add(conn);
    }
  }

  // ------------------------------------------------------------------ tasks

  private submit(conn: Conn, m: Extract<ProcToAgent, { t: "submit" }>): void {
    this.taskStats.submitted++;
    const job = this.jobOf(conn);
    const env = m.o.env as Record<string, string> | undefined;
    const envKey = envKeyOf(env);
    const task: Task = {
      id: m.id,
      fn: m.fn,
      args: m.args,
      res: m.res,
      o: m.o,
      g: m.g,
      parent: m.p,
      job,
      envKey,
      env,
      cls: `${job}|${JSON.stringify(m.res)}|${envKey}`,
      retriesLeft: typeof m.o.maxRetries === "number" ? (m.o.maxRetries < 0 ? Infinity : m.o.maxRetries) : 3,
      depsLeft: 0,
      state: "deps",
    };
    // A task first sent straight to a leased worker and handed back is known already.
    if (!conn.held.has(m.id) || !this.objects.get(m.id)) {
      this.objects.create(m.id);
      conn.held.add(m.id);
    }
    this.tasks.set(task.id, task);
    this.holdArgs(task.args, +1);
    this.resolveDeps(task, () => this.enqueue(task));
  }

  holdArgs(args: ArgWire[], dir: 1 | -1): void {
    for (const a of args) {
      const ids = "ref" in a ? [a.ref] : "v" in a ? (a.v.r ?? []) : [];
      for (const id of ids) dir > 0 ? this.objects.incr(id) : this.objects.decr(id);
    }
  }

  /** Wait until every ref argument is ready, then call `go` (once). */
  resolveDeps(task: Task, go: () => void): void {
    for (const a of task.args) {
      if (!("ref" in a)) continue;
      const e = this.objects.get(a.ref);
      if (!e) {
        this.finish(task, { err: { kind: "ObjectLostError", message: `argument ${a.ref} of ${task.fn.n} no longer exists (it was freed or never created)` } });
        return;
      }
      if (e.s === 0) {
        task.depsLeft++;
        (e.waiters ??= []).push(() => {
          if (--task.depsLeft === 0 && task.state === "deps") {
            go();
            this.kick();
          }
        });
      }
    }
    if (task.depsLeft === 0) go();
  }

  enqueue(task: Task): void {
    if (task.state === "done") return;
    if (this.net && !task.remoteOwner && !this.runsHereAnyway(task)) {
      const p = this.net.place(task.res, task.o.strategy);
      if ("error" in p) {
        this.finish(task, { err: { kind: "InfeasibleTaskError", message: `${task.fn.n} cannot be scheduled: ${p.error}` } });
        return;
      }
      if ("node" in p && p.node !== this.opts.nodeId) {
        this.taskStats.forwarded++;
        this.net.forwardTask(task, p.node);
        return;
      }
      if ("node" in p) {
        // Runs here: arguments whose only copy is on another node are copied first.
        const remote = this.remoteArgEntries(task);
        if (remote.length) {
          task.state = "deps";
          Promise.all(remote.map((e) => this.net!.localize(e))).then(
            () => this.enqueueLocal(task),
            (err) => this.finish(task, { err: { kind: "ObjectLostError", message: `an argument of ${task.fn.n} could not be fetched: ${err.message}` } }),
          );
          return;
        }
      }
    }
    this.enqueueLocal(task);
  }

  /**
   * The common case needs no look at the cluster: a default-strategy task on a node that is
   * alone, or that has room now with nothing queued, runs here (placement would say so too,
   * at the cost of a pass over the cluster view for every task).
   */
  private runsHereAnyway(task: Task): boolean {
    const s = task.o.strategy;
    if (s !== undefined && s !== "DEFAULT") return false;
    if (this.remoteArgEntries(task).length) return false;
    if (this.net!.view.size <= 1) return feasible(this.total, task.res);
    return fits(this.available, task.res) && this.queuedCount() === 0;
  }

  private remoteArgEntries(task: Task): ObjEntry[] {
    const out: ObjEntry[] = [];
    for (const a of task.args) {
      if (!("ref" in a)) continue;
      const e = this.objects.get(a.ref);
      if (e?.loc && e.loc.node !== this.opts.nodeId) out.push(e);
    }
    return out;
  }

  /** Can some node of the cluster ever provide this demand? */
  canEverRun(res: Resources): boolean {
    if (feasible(this.total, res)) return true;
    return !!this.net && this.net.nodeViews().some((n) => n.alive && feasible(n.total, res));
  }

  /** Queue a task on this node (placement already decided). */
  enqueueLocal(task: Task): void {
    if (task.state === "done") return;
    if (task.remoteOwner && !feasible(this.total, task.res)) {
      this.finish(task, { err: { kind: "InfeasibleTaskError", message: `${task.fn.n} was sent to node ${this.opts.nodeName}, which can never provide ${describe(task.res)}` } });
      return;
    }
    if (!feasible(this.total, task.res)) {
      task.state = "queued";
      task.infeasibleSince = Date.now();
      this.infeasible.add(task);
      return;
    }
    task.state = "queued";
    let q = this.queues.get(task.cls);
    if (!q) this.queues.set(task.cls, (q = new Queue()));
    q.push(task);
    this.kick();
  }

  resolvedArgs(args: ArgWire[]): ResolvedArg[] {
    return args.map((a) => {
      if (!("ref" in a)) return a;
      const e = this.objects.get(a.ref);
      if (!e) return { ref: a.ref, v: lostEntry(a.ref, this.opts.nodeName).v };
      if (e.loc) {
        this.store.restore(e.id, e.loc);
        return { ref: a.ref, loc: e.loc };
      }
      return { ref: a.ref, v: e.v };
    });
  }

  kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // Once the messages being handled now are all in: one scheduling pass per burst.
    process.nextTick(() => {
      this.scheduled = false;
      this.schedule();
    });
  }

  /** Pipeline depth for a scheduling class: deep for tiny tasks, 1 for long ones. */
  private depth(cls: string): number {
    const ms = this.clsMs.get(cls);
    if (ms === undefined) return 1;
    if (ms < 0.5) return 64;
    if (ms < 2) return 16;
    if (ms < 10) return 4;
    return 1;
  }

  private schedule(): void {
    if (this.stopping) return;
    for (const [cls, q] of this.queues) {
      if (q.length === 0) {
        this.queues.delete(cls);
        continue;
      }
      // 1. spread over free resources first: one task per new lease
      while (q.length) {
        const t = q.peek()!;
        if (t.state === "done") {
          q.shift(); // finished while it waited (a late result, a cancel): nothing to run
          continue;
        }
        if (!fits(this.available, t.res)) break;
        let gpus: number[] = [];
        const nGpu = t.res.GPU ?? 0;
        if (nGpu > 0) {
          const picked = pickGpus(this.gpuFree, nGpu);
          if (!picked) break;
          gpus = picked;
        }
        const envKey = t.envKey + (gpus.length ? `|gpu:${gpus.join(",")}` : "");
        const w = this.idleWorker(t.job, envKey) ?? this.spawn(t.job, envKey, this.envFor(t.env, gpus));
        subtract(this.available, t.res);
        if (nGpu > 0) takeGpus(this.gpuFree, gpus, nGpu);
        w.lease = { cls, res: t.res, gpus, tasks: [] };
        w.job = t.job;
        let set = this.leases.get(cls);
        if (!set) this.leases.set(cls, (set = new Set()));
        set.add(w);
        w.state = "leased";
        this.sendTask(w, q.shift()!);
      }
      // 2. then pipeline more onto workers already leased for this class (tiny tasks)
      const leased = this.leases.get(cls);
      if (leased) {
        const d = this.depth(cls);
        for (const w of leased) {
          if (w.blocked || w.state !== "leased") continue;
          while (q.length && w.lease!.tasks.length < d) this.sendTask(w, q.shift()!);
        }
      }
    }
  }

  private envFor(env: Record<string, string> | undefined, gpus: number[]): Record<string, string> {
    const out: Record<string, string> = { ...(env ?? {}) };
    if (gpus.length) {
      out.CUDA_VISIBLE_DEVICES = gpus.map((i) => this.opts.gpus[i]!.index).join(",");
      // The indices are nvidia-smi's (PCI bus order); CUDA numbers fastest-first unless told,
      // which on a machine of mixed GPUs would hand the task another GPU than it was given.
      out.CUDA_DEVICE_ORDER = "PCI_BUS_ID";
    }
    return out;
  }

  private idleWorker(job: string, envKey: string): WorkerProc | undefined {
    let fresh: WorkerProc | undefined;
    for (const w of this.workers.values()) {
      if (w.state !== "idle" || w.envKey !== envKey) continue;
      if (w.job === job) return w;
      if (w.job === JOB_LESS && !fresh) fresh = w;
    }
    if (fresh) {
      fresh.job = job;
      // keep a pre-started worker ready for the next job
      if (this.countFresh() < this.prestart) this.spawn(JOB_LESS, "", {});
    }
    return fresh;
  }

  private countFresh(): number {
    let n = 0;
    for (const w of this.workers.values()) if (w.job === JOB_LESS && (w.state === "idle" || w.state === "starting")) n++;
    return n;
  }

  private spawn(job: string, envKey: string, env: Record<string, string>): WorkerProc {
    const w = spawnWorker(this.opts.nodeId.slice(0, 8), job, envKey, env, {
      agentScript: this.opts.agentScript,
      env: this.baseEnv(),
      onLine: (w, stream, line) => {
        const text = `(pid=${w.pid}${this.opts.isHead ? "" : `, node=${this.opts.nodeName}`}) ${line}`;
        if (w.job && this.head) this.head.onJobLog(w.job, stream, text);
        else if (w.job && this.net) this.net.sendJobLog(w.job, stream, text);
        else if (stream === "stderr") console.error(`[worker ${w.pid}] ${line}`);
      },
      onExit: (w, code, signal) => this.onWorkerExit(w, code, signal),
    });
    this.workers.set(w.id, w);
    return w;
  }

  private sendTask(w: WorkerProc, t: Task): void {
    if (t.state === "done") return; // finished while it waited in the queue
    w.lease!.tasks.push(t.id);
    t.state = "running";
    t.worker = w;
    this.deliver(w, t);
  }

  private deliver(w: WorkerProc, t: Task): void {
    const conn = w.conn as Conn | undefined;
    if (!conn) {
      // still starting: sent once it says hello
      w.onReady.push(() => this.deliver(w, t));
      return;
    }
    if (t.worker !== w || t.state !== "running") return; // moved or cancelled meanwhile
    const msg: AgentToProc = { t: "task", id: t.id, fn: t.fn, args: t.pre ?? this.resolvedArgs(t.args), g: t.g, job: t.job, ns: t.o.ns };
    if (w.lease?.gpus.length) (msg as any).gpus = w.lease.gpus.map((i) => this.opts.gpus[i]!.index);
    conn.send(msg);
  }

  private onDone(conn: Conn, m: Extract<ProcToAgent, { t: "done" }>): void {
    const w = conn.worker;
    const t = this.tasks.get(m.id);
    if (!w) return;
    if (!t) {
      // Finished meanwhile by another path (cancelled, or its result came from a node that
      // was thought dead): the worker's slot is still freed, or its lease would leak.
      const lease = w.lease;
      const i = lease ? lease.tasks.indexOf(m.id) : -1;
      if (i >= 0) {
        lease!.tasks.splice(i, 1);
        if (lease!.tasks.length === 0 && w.state === "leased") this.releaseLease(w);
      }
      return;
    }
    if (w.actorId) {
      this.onActorCallDone(w, t, m);
      return;
    }
    const lease = w.lease;
    if (lease) {
      const i = lease.tasks.indexOf(m.id);
      if (i >= 0) lease.tasks.splice(i, 1);
      const prev = this.clsMs.get(lease.cls);
      this.clsMs.set(lease.cls, prev === undefined ? m.ms : prev * 0.8 + m.ms * 0.2);
    }
    if (m.err && t.o.retryExceptions && t.retriesLeft > 0 && !t.cancelled) {
      t.retriesLeft--;
      t.worker = undefined;
      this.enqueue(t);
    } else {
      this.finish(t, m);
    }
    if (lease && lease.tasks.length === 0) this.releaseLease(w);
  }

  private releaseLease(w: WorkerProc): void {
    const lease = w.lease!;
    const q = this.queues.get(lease.cls);
    if (q?.length && !w.blocked && w.state === "leased") {
      // same class waiting: keep the lease, feed the worker
      const d = this.depth(lease.cls);
      while (q.length && lease.tasks.length < d) this.sendTask(w, q.shift()!);
      return;
    }
    if (w.blocked) add(this.available, nonCpuPart(lease.res));
    else add(this.available, lease.res);
    if (lease.gpus.length) returnGpus(this.gpuFree, lease.gpus, lease.res.GPU ?? 0);
    this.leases.get(lease.cls)?.delete(w);
    w.lease = undefined;
    w.blocked = false;
    if (w.state === "leased") {
      w.state = "idle";
      w.idleSince = Date.now();
    }
    this.kick();
  }

  /** Complete a task: its result (or error) becomes its object; holds on args are dropped. */
  finish(t: Task, r: { v?: Tagged; loc?: StoredLoc; err?: WireError; ms?: number }): void {
    if (t.state === "done") return;
    t.state = "done";
    this.tasks.delete(t.id);
    this.infeasible.delete(t);
    if (t.remoteOwner) {
      // Ran here for a process on another node: the result goes to its owner.
      let { v, loc, err } = r;
      if (t.cancelled) {
        if (loc) this.store.free(t.id, loc);
        loc = v = undefined;
        err = { kind: "TaskCancelledError", message: `${t.fn.n}${t.m ? "." + t.m : ""} (${t.id}) was cancelled` };
      }
      if (loc) this.store.add(t.id, loc);
      this.net?.sendResult(t, { v, loc, err });
      return;
    }
    const remoteResult = !!r.loc && r.loc.node !== this.opts.nodeId;
    // A result whose only copy is on another node keeps its lineage (and its arguments) so
    // it can be rebuilt if that node dies; the holds go when the object is freed.
    if (!remoteResult || t.actor) this.holdArgs(t.args, -1);
    let v = r.v;
    let loc = r.loc;
    if (t.cancelled) {
      v = encodeError({ kind: "TaskCancelledError", message: `${t.fn.n}${t.m ? "." + t.m : ""} (${t.id}) was cancelled` });
      if (loc) {
        this.store.free(t.id, loc);
        loc = undefined;
      }
    } else if (r.err) {
      v = encodeError(r.err);
    }
    if (loc && loc.node === this.opts.nodeId) this.store.add(t.id, loc);
    else if (loc) this.net?.recordRemoteCopy(t.id, loc);
    // (a task's run time goes to its submitter, which learns from it: see DirectTasks.learn)
    const e = this.objects.resolve(t.id, v, loc, t.actor ? undefined : r.ms);
    if (e && remoteResult && !t.actor && !t.cancelled) e.lineage = t;
    else if (remoteResult && !t.actor) this.holdArgs(t.args, -1);
    if (loc) this.maybeHintGc();
  }

  private onYield(m: Extract<ProcToAgent, { t: "yield" }>): void {
    const id = `${m.id}#${m.i}`;
    const t = this.tasks.get(m.id);
    if (t?.remoteOwner) {
      if (m.loc) this.store.add(id, m.loc);
      this.net?.sendYield(t, m.i, m.v, m.loc);
      t.genCount = m.i + 1;
      return;
    }
    this.onRemoteYield(m.id, m.i, m.v, m.loc);
  }

  /** A generator item (from our worker, or from the node running the generator). */
  onRemoteYield(taskId: string, i: number, v?: Tagged, loc?: StoredLoc): void {
    const id = `${taskId}#${i}`;
    const t = this.tasks.get(taskId);
    const e = this.objects.get(id) ?? this.objects.create(id, 1);
    if (loc && loc.node === this.opts.nodeId) this.store.add(id, loc);
    else if (loc) this.net?.recordRemoteCopy(id, loc);
    this.objects.resolve(e.id, v, loc);
    if (t) t.genCount = i + 1;
  }

  /** The result of a task or actor call we forwarded to another node. */
  onRemoteResult(id: string, r: { v?: Tagged; loc?: StoredLoc; err?: WireError }): void {
    const t = this.tasks.get(id);
    if (!t || t.state === "done") return;
    // A late result from a node that was declared dead while the retry waits here: take it,
    // and drop the retry from the queue.
    if (t.state === "queued" && !t.worker) this.queues.get(t.cls)?.remove(t);
    t.remoteNode = undefined;
    if (r.err && !t.actor && t.o.retryExceptions && t.retriesLeft > 0 && !t.cancelled && r.err.kind === "TaskError") {
      t.retriesLeft--;
      this.enqueue(t);
      return;
    }
    this.finish(t, r);
  }

  /** A borrowed object became ready at its owner. */
  onRemoteReady(id: string, v?: Tagged, loc?: StoredLoc): void {
    const e = this.objects.get(id);
    if (!e || e.s === 1) return;
    this.objects.resolve(id, v, loc);
  }

  /** Another node died: what ran there is retried or failed, what lived there rebuilt or lost. */
  onNodeDied(nodeId: string, name: string): void {
    // Leases both ways: ours on its workers are lost with their tasks; its on ours end.
    for (const [worker, r] of this.remoteLeases) if (r.node === nodeId) this.onRemoteLeaseLost(worker, "NodeDiedError", `node ${name} died while running it`);
    for (const w of this.workers.values()) if (w.remoteLease?.owner === nodeId) this.endRemoteLease(w, w.remoteLease);
    for (const t of [...this.tasks.values()]) {
      if (t.remoteNode !== nodeId || t.state === "done") continue;
      t.remoteNode = undefined;
      if (t.actor) {
        this.finish(t, { err: { kind: "ActorDiedError", message: `${t.fn.n}.${t.m} failed: node ${name}, where its actor lived, died` } });
      } else if (t.retriesLeft > 0 && !t.cancelled) {
        t.retriesLeft--;
        t.state = "queued";
        this.enqueue(t);
      } else {
        this.finish(t, { err: { kind: "NodeDiedError", message: `${t.fn.n} failed: node ${name} died while running it and its retries are used up` } });
      }
    }
    for (const e of [...this.objects.entries.values()]) {
      if (e.s !== 1 || !e.loc || e.loc.node !== nodeId) continue;
      if (e.borrowed) {
        // The owner rebuilds or reports it; ask again.
        e.s = 0;
        e.loc = undefined;
        this.net?.sendTo(this.net.ownerOf(e.id), { t: "sub", ids: [e.id] });
        continue;
      }
      const lin = e.lineage as Task | undefined;
      e.loc = undefined;
      if (lin && lin.retriesLeft > 0) {
        // Rebuild from lineage: run the task that made it again (its arguments are still held).
        e.s = 0;
        e.lineage = undefined;
        const again: Task = { ...lin, state: "deps", depsLeft: 0, worker: undefined, remoteNode: undefined, retriesLeft: lin.retriesLeft - 1 };
        this.tasks.set(again.id, again);
        this.resolveDeps(again, () => this.enqueue(again));
      } else {
        e.v = encodeError({
          kind: "ObjectLostError",
          message: `object ${e.id} was lost: its only copy was on node ${name}, which died${lin ? ", and the task that made it has no retries left" : " (objects made with put() cannot be rebuilt)"}`,
        });
      }
    }
    for (const a of this.actors.values()) {
      if (a.home !== nodeId || a.state === "dead") continue;
      a.home = undefined;
      if (a.restartsLeft > 0) {
        a.restartsLeft--;
        a.state = "restarting";
        this.placeActorInCluster(a);
      } else {
        this.actorDead(a, `node ${name}, where it lived, died`);
      }
    }
    this.kick();
  }

  killActorById(id: string, noRestart: boolean): void {
    this.killActor(id, noRestart, "it was killed with kill()");
  }

  /** Another node cancels a task of its that runs here (`recursive`: and its subtasks here). */
  cancelTask(id: string, force: boolean, recursive: boolean): void {
    this.cancel(id, force, recursive);
  }

  /** Another node's process cancels, with force, a task it sent to a worker of ours leased to it. */
  cancelLeased(worker: string, secret: string, id: string, recursive: boolean): void {
    const w = this.workers.get(worker);
    if (w?.state === "direct" && w.remoteLease?.secret === secret) this.killForCancel(w, id, recursive);
  }

  private onBlocked(conn: Conn, returned: string[]): void {
    const w = conn.worker;
    if (!w?.lease || w.blocked) return;
    w.blocked = true;
    // Its CPU goes back to the pool while it waits (as Ray does), so nested tasks can run.
    add(this.available, cpuPart(w.lease.res));
    for (const id of returned) {
      const t = this.tasks.get(id);
      const i = w.lease.tasks.indexOf(id);
      if (i >= 0) w.lease.tasks.splice(i, 1);
      if (!t || t.state === "done") continue;
      t.worker = undefined;
      t.state = "queued";
      let q = this.queues.get(t.cls);
      if (!q) this.queues.set(t.cls, (q = new Queue()));
      q.unshift(t);
    }
    this.kick();
  }

  private onWorkerExit(w: WorkerProc, code: number | null, signal: string | null): void {
    const wasState = w.state;
    w.state = "dead";
    this.workers.delete(w.id);
    if (w.cancelKills) for (const timer of w.cancelKills.values()) clearTimeout(timer);
    (w.conn as Conn | undefined)?.socket.destroy();
    fs.rm(w.sock, { force: true }, () => {});
    if (this.stopping) return;
    this.store.sweepPins();
    const oom = w.stderrTail.some((l) => /heap out of memory|Allocation failed/i.test(l));
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    if (wasState === "direct") {
      // Its submitter retries or fails the tasks it had sent; tell it why.
      const owner = w.directOwner as Conn | undefined;
      const kind = oom ? "OutOfMemoryError" : "WorkerCrashedError";
      const message = oom
        ? `the worker running it (pid ${w.pid}) ran out of memory; give the task more memory or split the work`
        : `the worker running it (pid ${w.pid}) ${how}${w.stderrTail.length ? ": " + w.stderrTail.slice(-3).join(" | ") : ""}`;
      owner?.send({ t: "leaseLost", worker: w.id, kind, message });
      const rl = w.remoteLease;
      if (rl) {
        this.net?.sendTo(rl.owner, { t: "leaseLost", worker: w.id, kind, message });
        w.remoteLease = undefined;
        clearTimeout(rl.timer);
        rl.socket?.destroy();
      }
      add(this.available, w.blocked ? nonCpuPart(w.lease!.res) : w.lease!.res);
      w.lease = undefined;
    } else if (w.actorId) {
      this.onActorWorkerDied(w, oom ? `its process ran out of memory` : `its process (pid ${w.pid}) ${how}`);
    } else if (w.lease) {
      const lease = w.lease;
      const [running, ...rest] = lease.tasks;
      lease.tasks = [];
      for (const id of rest) {
        const t = this.tasks.get(id);
        if (t && t.state !== "done") {
          t.worker = undefined;
          this.enqueue(t);
        }
      }
      const t = running ? this.tasks.get(running) : undefined;
      if (t && t.state !== "done") {
        t.worker = undefined;
        if (t.cancelled) this.finish(t, {});
        else if (t.retriesLeft > 0) {
          t.retriesLeft--;
          this.enqueue(t);
        } else {
          const kind = oom ? "OutOfMemoryError" : "WorkerCrashedError";
          const message = oom
            ? `the worker running ${t.fn.n} (pid ${w.pid}) ran out of memory; give the task more memory or split the work`
            : `the worker running ${t.fn.n} (pid ${w.pid}) ${how}${w.stderrTail.length ? ": " + w.stderrTail.slice(-3).join(" | ") : ""}`;
          this.finish(t, { err: { kind, message } });
        }
      }
      this.releaseLease(w);
    }
    if (wasState !== "dead" && this.countFresh() < this.prestart && w.job === JOB_LESS) this.spawn(JOB_LESS, "", {});
    this.kick();
  }

  /**
   * cancel(): `recursive` cancels the tasks this agent knows whose parent is `id` (a task it
   * does not know itself, one run on a leased worker, has only those cancelled here) and tells
   * the worker running it, which cancels those it sent on its direct paths.
   */
  cancel(id: string, force: boolean, recursive: boolean): void {
    const t = this.tasks.get(id);
    if (recursive) this.cancelChildren(id, force);
    if (!t || t.state === "done") return;
    t.cancelled = true;
    if (t.state === "deps" || (t.state === "queued" && !t.worker)) {
      this.queues.get(t.cls)?.remove(t);
      this.finish(t, {});
      return;
    }
    if (t.remoteNode) {
      this.net?.sendTo(t.remoteNode, { t: "cancel", id, force, recursive });
      return;
    }
    const w = t.worker;
    if (!w) return;
    if (force && !t.actor) {
      this.killForCancel(w, id, recursive);
    } else {
      (w.conn as Conn | undefined)?.send(recursive ? { t: "cancel", id, r: 1 } : { t: "cancel", id });
    }
  }

  jobOf(conn: Conn): string {
    return conn.jobId ?? conn.worker?.job ?? JOB_LESS;
  }

  // ------------------------------------------------------------------ actors

  private createActor(conn: Conn, m: Extract<ProcToAgent, { t: "createActor" }>): void {
    const job = this.jobOf(conn);
    const a: Actor = {
      id: m.id,
      fn: m.fn,
      args: m.args,
      res: m.res,
      o: m.o,
      job,
      state: "pending",
      gpus: [],
      restartsLeft: typeof m.o.maxRestarts === "number" ? (m.o.maxRestarts < 0 ? Infinity : m.o.maxRestarts) : 0,
      queue: [],
      inFlight: new Map(),
      detached: !!m.o.detached,
      creator: conn,
    };
    this.actors.set(a.id, a);
    if (!m.o.name) {
      this.startActor(a);
      return;
    }
    const key = `${m.o.namespace}/${m.o.name}`;
    this.claimName(key, a, !!m.o.getIfExists).then(
      (r) => {
        if ("ok" in r) {
          a.name = String(m.o.name);
          a.namespace = String(m.o.namespace);
          this.startActor(a);
        } else if ("existing" in r) {
          // getIfExists: this handle stands for the existing actor; calls made meanwhile follow it.
          a.aliasOf = r.existing;
          const queued = a.queue;
          a.queue = [];
          for (const t of queued) {
            t.actor = r.existing;
            this.routeCall(t);
          }
        } else {
          this.actorDead(a, r.conflict);
        }
      },
      (e) => this.actorDead(a, `its name could not be registered with the head: ${(e as Error).message}`),
    );
  }

  private claimName(key: string, a: Actor, getIfExists: boolean): Promise<{ ok: true } | { existing: string } | { conflict: string }> {
    const headLink = !this.head && this.net?.headLink();
    if (headLink) return headLink.request({ t: "nameActor", key, actor: a.id, node: this.opts.nodeId, className: a.fn.n, getIfExists });
    return Promise.resolve(this.registerName(key, a.id, getIfExists, a.fn.n));
  }

  /** Head (or a lone node): claim a name for an actor. */
  registerName(key: string, actorId: string, getIfExists: boolean, className = "actor"): { ok: true } | { existing: string } | { conflict: string } {
    const ex = this.named.get(key);
    if (ex && this.actors.get(ex.id)?.state !== "dead") {
      if (getIfExists) return { existing: ex.id };
      const [ns, name] = [key.slice(0, key.indexOf("/")), key.slice(key.indexOf("/") + 1)];
      return { conflict: `an actor named "${name}" already exists in namespace "${ns}"; pass getIfExists: true to reuse it` };
    }
    this.named.set(key, { id: actorId, c: className });
    return { ok: true };
  }

  lookupName(key: string): { id: string; c: string; home?: string } | undefined {
    const ex = this.named.get(key);
    if (!ex || this.actors.get(ex.id)?.state === "dead") return undefined;
    if (ex.home && this.net && !this.net.view.get(ex.home)?.alive) return undefined; // its node is gone
    return ex;
  }

  /** Head: a (re-)registering node reports a named actor it hosts. */
  rememberName(key: string, info: { id: string; c: string; home: string }): void {
    const ex = this.named.get(key);
    if (!ex || ex.id === info.id || this.actors.get(ex.id)?.state === "dead") this.named.set(key, info);
  }

  /** Named actors living on this node (reported to the head when this node registers). */
  namedHosted(): Array<{ key: string; id: string; c: string }> {
    const out: Array<{ key: string; id: string; c: string }> = [];
    for (const a of this.actors.values()) {
      if (a.state === "dead" || a.home || a.aliasOf || !a.o.name) continue;
      out.push({ key: `${a.o.namespace}/${a.o.name}`, id: a.id, c: a.fn.n });
    }
    return out;
  }

  dropName(key: string, actorId: string): void {
    if (this.named.get(key)?.id === actorId) this.named.delete(key);
  }

  private startActor(a: Actor): void {
    this.holdArgs(a.args, +1);
    a.argsHeld = true;
    if (!this.canEverRun(a.res)) {
      this.actorDead(a, `no node can ever provide its resources ${describe(a.res)} (this node has ${describe(this.total)})`);
      return;
    }
    const fake: Task = { id: a.id, fn: a.fn, args: a.args, res: a.res, o: {}, g: 0, job: a.job, cls: "", envKey: "", retriesLeft: 0, depsLeft: 0, state: "deps" };
    this.resolveDeps(fake, () => this.placeActorInCluster(a));
  }

  /** Pick the actor's node: here, or another node through the cluster view. */
  private placeActorInCluster(a: Actor): void {
    if (this.net && !a.remoteOwner) {
      const p = this.net.place(a.res, a.o.strategy);
      if ("error" in p) {
        this.actorDead(a, p.error);
        return;
      }
      if ("node" in p && p.node !== this.opts.nodeId) {
        this.net.forwardActor(a, p.node);
        const queued = a.queue;
        a.queue = [];
        for (const t of queued) this.routeCall(t);
        return;
      }
    }
    this.placeActor(a);
  }

  /** Host side: an actor created by another node runs here. */
  hostActor(spec: { id: string; fn: FnRef; res: Resources; o: Record<string, any>; job: string; owner: string }): Actor {
    const a: Actor = {
      id: spec.id,
      fn: spec.fn,
      args: [],
      res: spec.res,
      o: spec.o,
      job: spec.job,
      state: "pending",
      gpus: [],
      restartsLeft: typeof spec.o.maxRestarts === "number" ? (spec.o.maxRestarts < 0 ? Infinity : spec.o.maxRestarts) : 0,
      queue: this.actors.get(spec.id)?.queue ?? [],
      inFlight: new Map(),
      detached: !!spec.o.detached,
      remoteOwner: spec.owner,
    };
    this.actors.set(a.id, a);
    return a;
  }

  /** Owner side: the node hosting one of our actors reports a change. */
  onRemoteActorState(actorId: string, state: string, _node: string, cause?: string): void {
    const a = this.actors.get(actorId);
    if (!a || a.state === "dead") return;
    if (state === "dead") {
      a.home = undefined;
      this.actorDead(a, cause ?? "it died on its node");
    } else if (state === "alive") {
      a.state = "alive";
    }
  }

  /** Host side: a call from another node's process. */
  acceptRemoteCall(id: string, actorId: string, method: string, args: ResolvedArg[], caller: string, localize: (a: ResolvedArg[]) => Promise<ResolvedArg[]>): void {
    const a = this.actors.get(actorId);
    const t: Task = {
      id, fn: a?.fn ?? { n: "actor" }, args: [], res: {}, o: {}, g: 0, job: a?.job ?? "", cls: "", envKey: "",
      retriesLeft: 0, depsLeft: 1, state: "deps", actor: actorId, m: method, remoteOwner: caller,
    };
    if (!a || a.state === "dead") {
      this.finish(t, { err: { kind: "ActorDiedError", message: a ? `${a.fn.n} actor ${a.id} is dead: ${a.deathCause}` : `actor ${actorId} does not live on node ${this.opts.nodeName}` } });
      return;
    }
    this.tasks.set(t.id, t);
    a.queue.push(t);
    localize(args).then(
      (pre) => {
        t.pre = pre;
        t.depsLeft = 0;
        this.pumpActor(a);
      },
      (e) => this.finish(t, { err: { kind: "ObjectLostError", message: `an argument of ${a.fn.n}.${method} could not be fetched: ${(e as Error).message}` } }),
    );
  }

  /** Start (or restart) the actor's process once its resources are free. */
  placeActor(a: Actor): void {
    if (a.state === "dead") return;
    if (!fits(this.available, a.res)) {
      // A demand this node can never meet (a placement-group bundle not placed yet, or placed
      // elsewhere) is placed in the cluster again rather than waited for here.
      const again = () => (this.net && !a.remoteOwner && !feasible(this.total, a.res) ? this.placeActorInCluster(a) : this.placeActor(a));
      setTimeout(again, 50).unref();
      return;
    }
    let gpus: number[] = [];
    const nGpu = a.res.GPU ?? 0;
    if (nGpu > 0) {
      const picked = pickGpus(this.gpuFree, nGpu);
      if (!picked) {
        setTimeout(() => this.placeActor(a), 50).unref();
        return;
      }
      gpus = picked;
      takeGpus(this.gpuFree, gpus, nGpu);
    }
    subtract(this.available, a.res);
    a.gpus = gpus;
    const env = this.envFor(a.o.env, gpus);
    const w = this.spawn(a.job, `actor:${a.id}`, env);
    w.state = "actor";
    w.actorId = a.id;
    a.worker = w;
    a.state = "starting";
    w.onReady.push(() => {
      (w.conn as Conn).send({
        t: "actorInit",
        actor: a.id,
        fn: a.fn,
        args: a.pre ?? this.resolvedArgs(a.args),
        gpus: gpus.map((i) => this.opts.gpus[i]!.index),
        maxConcurrency: typeof a.o.maxConcurrency === "number" ? a.o.maxConcurrency : 1,
        ns: a.o.ns,
        job: a.job,
        sock: this.directSocket(a),
      });
      this.pumpActor(a);
    });
  }

  private onActorReady(conn: Conn, actorId: string, err?: WireError): void {
    const a = this.actors.get(actorId);
    if (!a) return;
    if (err) {
      this.restartsExhausted(a);
      // Calls already sent to the worker fail with the cause too, and the actor's resources
      // come back (actorDead alone left both to the worker's exit, which no longer counts).
      this.actorDeadAndRelease(a, `its constructor threw: ${err.causeName ?? "Error"}: ${err.message}`);
      conn.worker?.proc.kill("SIGKILL");
      return;
    }
    a.state = "alive";
    if (a.remoteOwner) this.net?.sendTo(a.remoteOwner, { t: "actorState", actor: a.id, state: "alive", node: this.opts.nodeId });
    const sock = this.directSocket(a);
    if (sock && a.creator && !a.creator.socket.destroyed) a.creator.send({ t: "actorDirect", actor: a.id, sock });
  }

  /**
   * The socket an actor listens on for calls from its creator on this node (one hop each way
   * instead of two through the agent). Not for actors whose calls the agent must retry.
   */
  private directSocket(a: Actor): string | undefined {
    if (!a.creator || (typeof a.o.maxTaskRetries === "number" && a.o.maxTaskRetries !== 0)) return undefined;
    return path.join(os.tmpdir(), `tray-a-${process.pid}-${a.id.replace(/[^A-Za-z0-9]/g, "")}.sock`);
  }

  private restartsExhausted(a: Actor): void {
    a.restartsLeft = 0;
  }

  private callActor(conn: Conn, m: Extract<ProcToAgent, { t: "call" }>): void {
    let a = this.actors.get(m.actor);
    while (a?.aliasOf) a = this.actors.get(a.aliasOf);
    this.objects.create(m.id);
    conn.held.add(m.id);
    const t: Task = {
      id: m.id,
      fn: a?.fn ?? { n: "actor" },
      args: m.args,
      res: {},
      o: {},
      g: 0,
      job: this.jobOf(conn),
      cls: "",
      envKey: "",
      retriesLeft: typeof a?.o.maxTaskRetries === "number" ? a.o.maxTaskRetries : 0,
      depsLeft: 0,
      state: "deps",
      actor: m.actor,
      m: m.m,
    };
    this.tasks.set(t.id, t);
    this.holdArgs(t.args, +1);
    this.routeCall(t);
  }

  /** Queue a call where its actor is: here, or (in order) towards the node that hosts it. */
  routeCall(t: Task): void {
    let id = t.actor!;
    let a = this.actors.get(id);
    while (a?.aliasOf) {
      id = a.aliasOf;
      a = this.actors.get(id);
    }
    t.actor = id;
    if (a && !a.home) {
      if (a.state === "dead") {
        this.finish(t, { err: { kind: "ActorDiedError", message: `${a.fn.n} actor ${a.id} is dead: ${a.deathCause}` } });
        return;
      }
      t.fn = a.fn;
      if (typeof a.o.maxTaskRetries === "number") t.retriesLeft = a.o.maxTaskRetries;
      a.queue.push(t);
      this.resolveDeps(t, () => this.pumpActor(a!));
      return;
    }
    if (!this.net) {
      this.finish(t, { err: { kind: "ActorDiedError", message: `actor ${id} does not exist on this cluster` } });
      return;
    }
    let q = this.remoteCalls.get(id);
    if (!q) this.remoteCalls.set(id, (q = []));
    q.push(t);
    this.resolveDeps(t, () => this.pumpRemoteCalls(id));
    this.pumpRemoteCalls(id);
  }

  private pumpRemoteCalls(actorId: string): void {
    const q = this.remoteCalls.get(actorId);
    if (!q || this.locating.has(actorId) || !this.net) return;
    const local = this.actors.get(actorId);
    while (q.length) {
      const t = q[0]!;
      if (t.state === "done") {
        q.shift();
        continue;
      }
      if (t.depsLeft > 0) return;
      if (local?.state === "dead") {
        q.shift();
        this.finish(t, { err: { kind: "ActorDiedError", message: `${local.fn.n} actor ${actorId} is dead: ${local.deathCause}` } });
        continue;
      }
      const home = local?.home ?? this.net.cachedHome(actorId);
      if (!home) {
        if (local && !local.home) {
          // became local meanwhile
          this.remoteCalls.delete(actorId);
          for (const c of q) this.routeCall(c);
          return;
        }
        if (local) return; // still being placed
        this.locating.add(actorId);
        this.net.locateActor(actorId).then(
          (h) => {
            this.locating.delete(actorId);
            if (!h) {
              const dead = this.remoteCalls.get(actorId) ?? [];
              this.remoteCalls.delete(actorId);
              for (const c of dead) this.finish(c, { err: { kind: "ActorDiedError", message: `actor ${actorId} is dead or unknown to its owner` } });
              return;
            }
            this.pumpRemoteCalls(actorId);
          },
          (e) => {
            this.locating.delete(actorId);
            const dead = this.remoteCalls.get(actorId) ?? [];
            this.remoteCalls.delete(actorId);
            for (const c of dead) this.finish(c, { err: { kind: "ActorDiedError", message: `actor ${actorId} cannot be reached: ${(e as Error).message}` } });
          },
        );
        return;
      }
      q.shift();
      this.net.forwardCall(t, home);
    }
  }

  /** Send queued calls in order, stopping at the first whose arguments are not ready. */
  pumpActor(a: Actor): void {
    const w = a.worker;
    if (!w?.conn || (a.state !== "starting" && a.state !== "alive")) return;
    while (a.queue.length) {
      const t = a.queue[0]!;
      if (t.state === "done") {
        a.queue.shift();
        continue;
      }
      if (t.depsLeft > 0) break;
      a.queue.shift();
      t.state = "running";
      t.worker = w;
      a.inFlight.set(t.id, t);
      (w.conn as Conn).send({ t: "actorCall", id: t.id, m: t.m!, args: t.pre ?? this.resolvedArgs(t.args) });
    }
  }

  private onActorCallDone(w: WorkerProc, t: Task, m: Extract<ProcToAgent, { t: "done" }>): void {
    const a = this.actors.get(w.actorId!);
    a?.inFlight.delete(t.id);
    this.finish(t, m);
  }

  onActorWorkerDied(w: WorkerProc, cause: string): void {
    const a = this.actors.get(w.actorId!);
    if (!a || a.worker !== w) return;
    a.worker = undefined;
    const sock = this.directSocket(a);
    if (sock) fs.rmSync(sock, { force: true });
    if (a.state !== "dead") add(this.available, a.res);
    if (a.gpus.length) returnGpus(this.gpuFree, a.gpus, a.res.GPU ?? 0);
    a.gpus = [];
    const inFlight = [...a.inFlight.values()];
    a.inFlight.clear();
    if (a.state !== "dead" && a.restartsLeft > 0) {
      a.restartsLeft--;
      a.state = "restarting";
      // calls that were running: retried if maxTaskRetries allows, else they fail
      const retry: Task[] = [];
      for (const t of inFlight) {
        if (t.retriesLeft > 0) {
          t.retriesLeft--;
          t.state = "deps";
          retry.push(t);
        } else {
          this.finish(t, { err: { kind: "ActorDiedError", message: `${a.fn.n}.${t.m} failed: the actor died while running it (${cause}); it is being restarted` } });
        }
      }
      a.queue.unshift(...retry);
      this.placeActor(a);
      return;
    }
    for (const t of inFlight) this.finish(t, { err: { kind: "ActorDiedError", message: `${a.fn.n}.${t.m} failed: the actor died (${cause})` } });
    if (a.state !== "dead") this.actorDead(a, cause);
  }

  actorDead(a: Actor, cause: string): void {
    a.state = "dead";
    a.deathCause = cause;
    for (const t of a.queue) this.finish(t, { err: { kind: "ActorDiedError", message: `${a.fn.n}.${t.m} failed: the actor is dead (${cause})` } });
    a.queue = [];
    if (a.name) {
      const key = `${a.namespace}/${a.name}`;
      this.dropName(key, a.id);
      if (!this.head) this.net?.headLink()?.send({ t: "dropName", key, actor: a.id });
    }
    // Released when they were held (an actor that never got a place held them too: its
    // constructor arguments stayed in the store forever).
    if (a.argsHeld) this.holdArgs(a.args, -1);
    a.argsHeld = false;
    if (a.remoteOwner) this.net?.sendTo(a.remoteOwner, { t: "actorState", actor: a.id, state: "dead", node: this.opts.nodeId, cause });
  }

  killActor(id: string, noRestart: boolean, cause: string): void {
    let a = this.actors.get(id);
    while (a?.aliasOf) {
      id = a.aliasOf;
      a = this.actors.get(id);
    }
    if (this.net && (!a || a.home)) {
      // It lives on another node: tell that node.
      const home = a?.home;
      const send = (h?: string) => h && this.net!.sendTo(h, { t: "kill", actor: id, noRestart });
      if (home) send(home);
      else void this.net.locateActor(id).then(send, () => {});
      return;
    }
    if (!a || a.state === "dead") return;
    if (noRestart) {
      a.restartsLeft = 0;
      const w = a.worker;
      this.actorDeadAndRelease(a, cause);
      w?.proc.kill("SIGKILL");
    } else {
      a.worker?.proc.kill("SIGKILL");
    }
  }

  actorDeadAndRelease(a: Actor, cause: string): void {
    if (a.worker) {
      add(this.available, a.res);
      if (a.gpus.length) returnGpus(this.gpuFree, a.gpus, a.res.GPU ?? 0);
      a.gpus = [];
      for (const t of a.inFlight.values()) this.finish(t, { err: { kind: "ActorDiedError", message: `${a.fn.n}.${t.m} failed: the actor died (${cause})` } });
      a.inFlight.clear();
      a.worker.actorId = undefined; // its exit is no longer this actor's business
      a.worker = undefined;
    }
    this.actorDead(a, cause);
  }

  // ------------------------------------------------------------------ jobs

  /** The job ended: stop its tasks, workers and (non-detached) actors. */
  endJob(jobId: string, broadcast = true): void {
    if (broadcast && this.head) this.net?.broadcastEndJob(jobId);
    // Whole queues of the job go at once (a million queued tasks must not cost a million scans).
    for (const [cls, q] of this.queues) {
      if (!cls.startsWith(`${jobId}|`)) continue;
      this.queues.delete(cls);
      for (const t of q) {
        t.cancelled = true;
        this.finish(t, {});
      }
    }
    for (const t of [...this.tasks.values()]) {
      if (t.job !== jobId || t.state === "done") continue;
      t.cancelled = true;
      if (!t.worker && !t.remoteNode) {
        this.queues.get(t.cls)?.remove(t);
        this.finish(t, {});
      }
    }
    for (const a of this.actors.values()) {
      if (a.job === jobId && !a.detached && a.state !== "dead") this.killActor(a.id, true, "its job ended");
    }
    for (const w of this.workers.values()) {
      if (w.job === jobId && !w.actorId) w.proc.kill("SIGKILL");
    }
  }

  // ------------------------------------------------------------------ housekeeping

  private tick(): void {
    const now = Date.now();
    for (const t of this.infeasible) {
      if (this.canEverRun(t.res) && !t.remoteOwner) {
        this.infeasible.delete(t);
        this.enqueue(t);
      } else if (now - t.infeasibleSince! > INFEASIBLE_GRACE_MS) {
        this.finish(t, {
          err: {
            kind: "InfeasibleTaskError",
            message: `${t.fn.n} needs ${describe(t.res)} but no node of the cluster can ever provide it (largest node: ${describe(this.total)})`,
          },
        });
      }
    }
    // Idle job workers beyond the pre-started count go away after a while.
    let idle = 0;
    for (const w of this.workers.values()) {
      if (w.state !== "idle") continue;
      if (++idle > this.prestart * 2 && now - w.idleSince > 10_000) w.proc.kill("SIGTERM");
    }
    if (this.store.used > this.store.capacity * 0.7) this.maybeHintGc();
    // Pins of processes that died without unmapping (see PIN_DIR): every 10 s is plenty.
    if (now - this.lastPinSweep > 10_000) {
      this.lastPinSweep = now;
      this.store.sweepPins();
    }
  }
  private lastPinSweep = Date.now();

  private maybeHintGc(): void {
    if (this.store.used < this.store.capacity * 0.5) return;
    const now = Date.now();
    if (now - this.lastGcHint < 250) return;
    this.lastGcHint = now;
    for (const c of this.conns) c.send({ t: "gc" });
  }

  /** Jobs/actors listing for status. */
  actorList() {
    return [...this.actors.values()]
      .filter((a) => !a.aliasOf)
      .map((a) => ({ id: a.id, className: a.fn.n, state: a.state, name: a.name, namespace: a.namespace, job: a.job, detached: a.detached, pid: a.worker?.pid, deathCause: a.deathCause }));
  }
}

function sumResources(rs: Resources[]): Resources {
  const out: Resources = {};
  for (const r of rs) add(out, r);
  return out;
}

function cpuPart(r: Resources): Resources {
  return r.CPU ? { CPU: r.CPU } : {};
}

function nonCpuPart(r: Resources): Resources {
  const { CPU: _c, ...rest } = r;
  return rest;
}

function readyItem(id: string, e: ObjEntry): { id: string; v?: Tagged; loc?: StoredLoc; ms?: number } {
  const it: { id: string; v?: Tagged; loc?: StoredLoc; ms?: number } = e.loc ? { id, loc: e.loc } : { id, v: e.v };
  if (e.ms !== undefined) it.ms = e.ms;
  return it;
}

function lostEntry(id: string, node: string, why?: string): ObjEntry {
  return {
    id,
    s: 1,
    count: 0,
    v: encodeError({ kind: "ObjectLostError", message: `object ${id} is lost on node ${node}: ${why ?? "it was freed (no reference to it remained) or never created"}` }),
  };
}

function generatorItemOf(id: string): string | undefined {
  const i = id.lastIndexOf("#");
  return i > 0 ? id.slice(0, i) : undefined;
}

