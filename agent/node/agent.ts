// The node agent: local scheduler, worker pool, object directory and store of one node.
// Drivers and workers on this node talk to it over a Unix socket. On the head it also hosts
// the head services (control store, jobs, API), which plug in through `HeadHooks`.
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { FrameReader, FrameWriter } from "../../src/protocol/frame.js";
import { validateProcMessage, type AgentToProc, type ArgWire, type ProcToAgent, type ResolvedArg } from "../../src/protocol/local.js";
import type { StoredLoc, Tagged } from "../../src/protocol/values.js";
import { encodeError } from "../../src/runtime/serialize.js";
import type { WireError } from "../../src/runtime/errors.js";
import type { FnRef } from "../../src/runtime/remote.js";
import { ObjectDirectory, type ObjEntry } from "./objects.js";
import { ObjectStore } from "./store.js";
import { spawnWorker, type WorkerProc, type Lease } from "./pool.js";
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

interface Task {
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
}

interface Actor {
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

export class NodeAgent {
  readonly socketPath: string;
  readonly objects = new ObjectDirectory();
  readonly store: ObjectStore;
  readonly total: Resources;
  readonly available: Resources;
  private readonly gpuFree: number[];
  private server?: net.Server;
  private connSeq = 0;
  private readonly conns = new Set<Conn>();
  private readonly workers = new Map<string, WorkerProc>();
  private readonly tasks = new Map<string, Task>();
  private readonly queues = new Map<string, Task[]>();
  private readonly leases = new Map<string, Set<WorkerProc>>();
  private readonly clsMs = new Map<string, number>();
  private readonly actors = new Map<string, Actor>();
  private readonly named = new Map<string, string>();
  private readonly infeasible = new Set<Task>();
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
    this.objects.onFree = (e) => {
      if (e.loc) this.store.free(e.id, e.loc);
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
        if (conn.readyItems.length === 0) setImmediate(() => this.flushReady(conn));
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

  private onClose(conn: Conn): void {
    this.conns.delete(conn);
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
          if (!this.objects.get(id)) continue;
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
        this.cancel(m.id, m.force, m.recursive);
        return;
      case "getActor": {
        const id = this.named.get(`${m.namespace}/${m.name}`);
        const a = id ? this.actors.get(id) : undefined;
        if (!a || a.state === "dead") {
          conn.send({ t: "rep", rid: m.rid, err: { kind: "TaskError", causeName: "ValueError", message: `no actor named "${m.name}" in namespace "${m.namespace}"` } });
        } else {
          conn.send({ t: "rep", rid: m.rid, value: { id: a.id, c: a.fn.n } });
        }
        return;
      }
      case "cluster": {
        let value: unknown;
        if (m.what === "nodes") value = this.head ? this.head.nodes() : [this.nodeInfo()];
        else if (m.what === "total") value = { ...this.total };
        else value = { ...this.available };
        conn.send({ t: "rep", rid: m.rid, value });
        return;
      }
      case "jobDone":
        if (conn.jobId) this.head?.onJobDone(conn.jobId, m.ok, m.err, m.result);
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
      store: this.store.stats(),
      workers: this.workers.size,
      pending: this.pendingDemand(),
    };
  }

  pendingDemand(): Array<{ resources: Resources; count: number; infeasible: boolean }> {
    const out = new Map<string, { resources: Resources; count: number; infeasible: boolean }>();
    const addTask = (t: Task, inf: boolean) => {
      const k = JSON.stringify(t.res) + inf;
      const d = out.get(k) ?? { resources: t.res, count: 0, infeasible: inf };
      d.count++;
      out.set(k, d);
    };
    for (const q of this.queues.values()) for (const t of q) addTask(t, false);
    for (const t of this.infeasible) addTask(t, true);
    return [...out.values()];
  }

  private subscribe(conn: Conn, id: string): void {
    let e = this.objects.get(id);
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
    const job = this.jobOf(conn);
    const env = m.o.env as Record<string, string> | undefined;
    const envKey = env ? JSON.stringify(env) : "";
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
    this.objects.create(m.id);
    conn.held.add(m.id);
    this.tasks.set(task.id, task);
    this.holdArgs(task.args, +1);
    this.resolveDeps(task, () => this.enqueue(task));
  }

  private holdArgs(args: ArgWire[], dir: 1 | -1): void {
    for (const a of args) {
      const ids = "ref" in a ? [a.ref] : (a.v.r ?? []);
      for (const id of ids) dir > 0 ? this.objects.incr(id) : this.objects.decr(id);
    }
  }

  /** Wait until every ref argument is ready, then call `go` (once). */
  private resolveDeps(task: Task, go: () => void): void {
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

  private enqueue(task: Task): void {
    if (task.state === "done") return;
    if (!feasible(this.total, task.res)) {
      task.state = "queued";
      task.infeasibleSince = Date.now();
      this.infeasible.add(task);
      return;
    }
    task.state = "queued";
    let q = this.queues.get(task.cls);
    if (!q) this.queues.set(task.cls, (q = []));
    q.push(task);
    this.kick();
  }

  private resolvedArgs(args: ArgWire[]): ResolvedArg[] {
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
    setImmediate(() => {
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
        const t = q[0]!;
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
    if (gpus.length) out.CUDA_VISIBLE_DEVICES = gpus.map((i) => this.opts.gpus[i]!.index).join(",");
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
        if (w.job) this.head?.onJobLog(w.job, stream, `(pid=${w.pid}) ${line}`);
        else if (stream === "stderr") console.error(`[worker ${w.pid}] ${line}`);
      },
      onExit: (w, code, signal) => this.onWorkerExit(w, code, signal),
    });
    this.workers.set(w.id, w);
    return w;
  }

  private sendTask(w: WorkerProc, t: Task): void {
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
    const msg: AgentToProc = { t: "task", id: t.id, fn: t.fn, args: this.resolvedArgs(t.args), g: t.g, job: t.job, ns: t.o.ns };
    if (w.lease?.gpus.length) (msg as any).gpus = w.lease.gpus.map((i) => this.opts.gpus[i]!.index);
    conn.send(msg);
  }

  private onDone(conn: Conn, m: Extract<ProcToAgent, { t: "done" }>): void {
    const w = conn.worker;
    const t = this.tasks.get(m.id);
    if (!w || !t) return;
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
  private finish(t: Task, r: { v?: Tagged; loc?: StoredLoc; err?: WireError }): void {
    if (t.state === "done") return;
    t.state = "done";
    this.tasks.delete(t.id);
    this.infeasible.delete(t);
    this.holdArgs(t.args, -1);
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
    if (loc) this.store.add(t.id, loc);
    this.objects.resolve(t.id, v, loc);
    if (t.g) {
      // items nobody subscribed to yet must still be answerable: nothing to do, they exist.
    }
    if (loc) this.maybeHintGc();
  }

  private onYield(m: Extract<ProcToAgent, { t: "yield" }>): void {
    const id = `${m.id}#${m.i}`;
    const t = this.tasks.get(m.id);
    // The submitter holds generator items: count it once for its process.
    const e = this.objects.get(id) ?? this.objects.create(id, 1);
    if (m.loc) this.store.add(id, m.loc);
    this.objects.resolve(e.id, m.v, m.loc);
    if (t) t.genCount = m.i + 1;
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
      if (!q) this.queues.set(t.cls, (q = []));
      q.unshift(t);
    }
    this.kick();
  }

  private onWorkerExit(w: WorkerProc, code: number | null, signal: string | null): void {
    const wasState = w.state;
    w.state = "dead";
    this.workers.delete(w.id);
    (w.conn as Conn | undefined)?.socket.destroy();
    if (this.stopping) return;
    const oom = w.stderrTail.some((l) => /heap out of memory|Allocation failed/i.test(l));
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    if (w.actorId) {
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

  private cancel(id: string, force: boolean, recursive: boolean): void {
    const t = this.tasks.get(id);
    if (recursive) for (const c of this.tasks.values()) if (c.parent === id) this.cancel(c.id, force, true);
    if (!t || t.state === "done") return;
    t.cancelled = true;
    if (t.state === "deps" || (t.state === "queued" && !t.worker)) {
      const q = this.queues.get(t.cls);
      const i = q ? q.indexOf(t) : -1;
      if (i >= 0) q!.splice(i, 1);
      this.finish(t, {});
      return;
    }
    const w = t.worker;
    if (!w) return;
    if (force && !t.actor) {
      w.proc.kill("SIGKILL");
    } else {
      (w.conn as Conn | undefined)?.send({ t: "cancel", id });
    }
  }

  private jobOf(conn: Conn): string {
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
    };
    this.actors.set(a.id, a);
    if (m.o.name) {
      const key = `${m.o.namespace}/${m.o.name}`;
      const existing = this.named.get(key);
      const ex = existing ? this.actors.get(existing) : undefined;
      if (ex && ex.state !== "dead") {
        if (m.o.getIfExists) {
          a.aliasOf = ex.id;
          a.state = ex.state;
          return;
        }
        a.state = "dead";
        a.deathCause = `an actor named "${m.o.name}" already exists in namespace "${m.o.namespace}"; pass getIfExists: true to reuse it`;
        return;
      }
      a.name = String(m.o.name);
      a.namespace = String(m.o.namespace);
      this.named.set(key, a.id);
    }
    this.holdArgs(a.args, +1);
    if (!feasible(this.total, a.res)) {
      this.actorDead(a, `no node can ever provide its resources ${describe(a.res)} (this node has ${describe(this.total)})`);
      return;
    }
    const fake: Task = { id: a.id, fn: a.fn, args: a.args, res: a.res, o: {}, g: 0, job, cls: "", envKey: "", retriesLeft: 0, depsLeft: 0, state: "deps" };
    this.resolveDeps(fake, () => this.placeActor(a));
  }

  /** Start (or restart) the actor's process once its resources are free. */
  private placeActor(a: Actor): void {
    if (a.state === "dead") return;
    if (!fits(this.available, a.res)) {
      setTimeout(() => this.placeActor(a), 50).unref();
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
        args: this.resolvedArgs(a.args),
        gpus: gpus.map((i) => this.opts.gpus[i]!.index),
        maxConcurrency: typeof a.o.maxConcurrency === "number" ? a.o.maxConcurrency : 1,
        ns: a.o.ns,
        job: a.job,
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
    if (!a) {
      this.finish(t, { err: { kind: "ActorDiedError", message: `actor ${m.actor} does not exist on this cluster` } });
      return;
    }
    if (a.state === "dead") {
      this.finish(t, { err: { kind: "ActorDiedError", message: `${a.fn.n} actor ${a.id} is dead: ${a.deathCause}` } });
      return;
    }
    this.tasks.set(t.id, t);
    this.holdArgs(t.args, +1);
    a.queue.push(t);
    this.resolveDeps(t, () => this.pumpActor(a!));
  }

  /** Send queued calls in order, stopping at the first whose arguments are not ready. */
  private pumpActor(a: Actor): void {
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
      (w.conn as Conn).send({ t: "actorCall", id: t.id, m: t.m!, args: this.resolvedArgs(t.args) });
    }
  }

  private onActorCallDone(w: WorkerProc, t: Task, m: Extract<ProcToAgent, { t: "done" }>): void {
    const a = this.actors.get(w.actorId!);
    a?.inFlight.delete(t.id);
    this.finish(t, m);
  }

  private onActorWorkerDied(w: WorkerProc, cause: string): void {
    const a = this.actors.get(w.actorId!);
    if (!a || a.worker !== w) return;
    a.worker = undefined;
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

  private actorDead(a: Actor, cause: string): void {
    const wasHolding = a.state !== "pending" || a.worker;
    a.state = "dead";
    a.deathCause = cause;
    for (const t of a.queue) this.finish(t, { err: { kind: "ActorDiedError", message: `${a.fn.n}.${t.m} failed: the actor is dead (${cause})` } });
    a.queue = [];
    if (a.name && this.named.get(`${a.namespace}/${a.name}`) === a.id) this.named.delete(`${a.namespace}/${a.name}`);
    if (wasHolding !== undefined) this.holdArgs(a.args, -1);
  }

  private killActor(id: string, noRestart: boolean, cause: string): void {
    let a = this.actors.get(id);
    while (a?.aliasOf) a = this.actors.get(a.aliasOf);
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

  private actorDeadAndRelease(a: Actor, cause: string): void {
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
  endJob(jobId: string): void {
    for (const t of [...this.tasks.values()]) {
      if (t.job !== jobId || t.state === "done") continue;
      t.cancelled = true;
      if (!t.worker) {
        const q = this.queues.get(t.cls);
        const i = q ? q.indexOf(t) : -1;
        if (i >= 0) q!.splice(i, 1);
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
      if (feasible(this.total, t.res)) {
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
  }

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

function cpuPart(r: Resources): Resources {
  return r.CPU ? { CPU: r.CPU } : {};
}

function nonCpuPart(r: Resources): Resources {
  const { CPU: _c, ...rest } = r;
  return rest;
}

function readyItem(id: string, e: ObjEntry): { id: string; v?: Tagged; loc?: StoredLoc } {
  return e.loc ? { id, loc: e.loc } : { id, v: e.v };
}

function lostEntry(id: string, node: string): ObjEntry {
  return {
    id,
    s: 1,
    count: 0,
    v: encodeError({ kind: "ObjectLostError", message: `object ${id} is not known on node ${node}: it was freed (no reference to it remained) or never created` }),
  };
}

function generatorItemOf(id: string): string | undefined {
  const i = id.lastIndexOf("#");
  return i > 0 ? id.slice(0, i) : undefined;
}

