// The runtime core of one driver or worker process: its connection to the node agent over a
// Unix socket, the objects it knows about, reference counting, and task execution.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { AsyncLocalStorage } from "node:async_hooks";
import { FrameReader, FrameWriter, connectFrames } from "../protocol/frame.js";
import { QuickPeer } from "../protocol/quick-peer.js";
import { INLINE_MAX_BYTES, type StoredLoc, type Tagged } from "../protocol/values.js";
import type { AgentToProc, ArgWire, ProcToAgent } from "../protocol/local.js";
import { decodeValue, encodeValue, encodeError as encodeErrorValue, tryDecodeError } from "./serialize.js";
import { mapStoredFile, readGrowing, writeObjectFile } from "./recycle.js";
import { ActorHandle, ObjectRef, type ActorHandleOf } from "./refs.js";
import { demandOf, type RemoteOptions } from "./options.js";
import { SpreadTasks } from "./spread.js";
import type { FnRef } from "./remote.js";
import { DirectTasks, leaseKey, plainArgs, type DirectSpec, type DoneMsg } from "./direct-tasks.js";
import { isPrimitive } from "../protocol/local.js";
import { GetTimeoutError, ObjectLostError, fromWireError, type WireError } from "./errors.js";

/** What this process knows of one object. */
interface ObjState {
  /** 0 pending, 1 ready */
  s: 0 | 1;
  v?: Tagged;
  loc?: StoredLoc;
  waiters?: Array<() => void>;
  subscribed?: boolean;
  /** In flight on a direct path (leased worker, actor socket): its result comes from there. */
  direct?: boolean;
  /** A direct result the agent has not been told of (see "ownership" below). */
  local?: boolean;
  /** Its last ref here is gone while it was in flight: released when the result arrives. */
  dropped?: boolean;
  /** A primitive result as it came back on a direct path (never encoded here). */
  hasPv?: boolean;
  pv?: unknown;
}

/** How calls reach an actor this process called: through the agent, or straight to it. */
interface ActorPath {
  agentOutstanding: number;
  inflight: Set<string>;
  writer?: FrameWriter;
  socket?: net.Socket;
  peer?: QuickPeer;
}

const GC_EVERY_BYTES = Number(process.env.TRAY_GC_EVERY_BYTES) || 64 * 1024 * 1024;

export interface TaskContext {
  taskId?: string;
  actorId?: string;
  gpuIds: number[];
}

export interface RuntimeContext {
  jobId: string;
  nodeId: string;
  workerId: string;
  taskId?: string;
  actorId?: string;
  namespace: string;
  gpuIds: number[];
}

export class Core {
  readonly socket: net.Socket;
  private readonly writer: FrameWriter;
  private seq = 0;
  private rid = 0;
  private readonly objects = new Map<string, ObjState>();
  /** Live ObjectRef instances per id in this process. */
  private readonly localCounts = new Map<string, number>();
  private readonly registry = new FinalizationRegistry<string>((id) => this.dropRef(id));
  private pendingDecrefs: string[] = [];
  private readonly replies = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  readonly taskContext = new AsyncLocalStorage<TaskContext>();
  /** The running task's context where tasks run one at a time (see worker.ts): no ALS cost. */
  current?: TaskContext;
  /** Set by the worker: receives task/actor messages. */
  onExecMessage?: (m: AgentToProc) => void;
  /** Set by the worker: hands back tasks queued behind one that now waits (see "blocked"). */
  onBlocked?: () => string[];
  private blockedDepth = 0;
  /** The running task waits in get/wait (its worker's CPU is lent out meanwhile). */
  get blocked(): boolean {
    return this.blockedDepth > 0;
  }
  /** Bytes of stored (large) objects written or read since the last collection. */
  private storedBytesSinceGc = 0;
  private gcScheduled = false;
  closed = false;

  constructor(
    socketPath: string,
    readonly workerId: string,
    readonly nodeId: string,
    public jobId: string,
    /** Namespace of the job (a pre-started worker learns it with its first task). */
    public namespace: string,
    readonly storeDir: string,
    readonly spillDir: string,
    readonly isWorker: boolean,
  ) {
    const reader = new FrameReader(
      (msgs) => {
        for (const m of msgs) this.onMessage(m as AgentToProc);
      },
      (err) => console.error(`[tray] bad frame from agent: ${err.message}`),
    );
    this.socket = connectFrames(socketPath, reader);
    this.writer = new FrameWriter(this.socket);
    this.socket.on("close", () => {
      this.closed = true;
      for (const r of this.replies.values()) r.reject(new Error("lost the connection to the node agent"));
      // The agent went away: a worker has nothing left to do; a driver has lost its cluster.
      if (this.isWorker) process.exit(0);
      console.error("[tray] lost the connection to the node agent; the job cannot continue");
      process.exit(1);
    });
    this.socket.on("error", () => {});
  }

  send(m: ProcToAgent): void {
    this.writer.send(m);
  }

  flush(): void {
    this.writer.flushNow();
  }

  request<T>(m: Record<string, unknown> & { t: string }): Promise<T> {
    const rid = ++this.rid;
    return new Promise<T>((resolve, reject) => {
      this.replies.set(rid, { resolve, reject });
      this.send({ ...m, rid } as any);
    });
  }

  newId(): string {
    return `${this.workerId}.${(++this.seq).toString(36)}`;
  }

  // ---------------------------------------------------------------- reference counting

  /** Count a new ObjectRef instance; `fresh` = the agent already counts this process for it. */
  trackRef(ref: ObjectRef<any>, fresh: boolean): void {
    const n = this.localCounts.get(ref.id) ?? 0;
    this.localCounts.set(ref.id, n + 1);
    if (n === 0) {
      const o = this.objects.get(ref.id);
      if (o?.dropped) o.dropped = false; // a ref to it came back before its result did
    }
    if (n === 0 && !fresh) this.send({ t: "addref", ids: [ref.id] });
    this.registry.register(ref, ref.id);
  }

  private dropRef(id: string): void {
    const n = (this.localCounts.get(id) ?? 1) - 1;
    if (n > 0) {
      this.localCounts.set(id, n);
      return;
    }
    this.localCounts.delete(id);
    const o = this.objects.get(id);
    if (o?.local) {
      // The agent never heard of it: nothing to release there. Still in flight: the result
      // is released when it arrives (see directResult).
      if (o.s === 1) this.objects.delete(id);
      else o.dropped = true;
      return;
    }
    this.objects.delete(id);
    if (this.pendingDecrefs.length === 0) setImmediate(this.flushDecrefs);
    this.pendingDecrefs.push(id);
  }

  private flushDecrefs = (): void => {
    if (this.pendingDecrefs.length === 0 || this.closed) return;
    const ids = this.pendingDecrefs;
    this.pendingDecrefs = [];
    this.send({ t: "decref", ids });
  };

  private newRef<T>(id: string): ObjectRef<T> {
    const ref = new ObjectRef<T>(id);
    this.trackRef(ref, true);
    return ref;
  }

  // ---------------------------------------------------------------- ownership of direct results
  //
  // Results of tasks sent to a leased worker and of direct actor calls are owned by this
  // process: while their refs stay here (the common case: submit, get, drop) the agent never
  // hears of them, so a task costs no agent message at all. The moment a ref leaves this
  // process (an argument, nested in a value, returned by a task) the agent is told of it
  // first (`direct`, then `directDone` once ready), on the same ordered socket as the message
  // that carries it, so nobody can ever ask the agent for an object it does not know.

  /** A task now on a direct path: its result comes from there and is owned here. */
  private markOwned(id: string): void {
    const o = this.objects.get(id);
    if (!o) return;
    o.direct = true;
    o.local = true;
  }

  /** A ref is about to leave this process: from now on the agent must know the object. */
  private announce(id: string): void {
    const o = this.objects.get(id);
    if (!o?.local) return;
    o.local = false;
    this.send({ t: "direct", id, actor: "" });
    if (o.s === 1) this.send({ t: "directDone", id, v: o.hasPv ? encodeValue(o.pv) : o.v, loc: o.loc });
  }

  /** Announce the refs nested in an encoded value that is about to leave this process. */
  announceNested(t: { r?: string[] }): void {
    if (t.r) for (const id of t.r) this.announce(id);
  }

  // ---------------------------------------------------------------- objects

  put<T>(value: T): ObjectRef<T> {
    if (value instanceof ObjectRef) throw new TypeError("put() of an ObjectRef: pass the ref itself instead");
    const id = this.newId();
    if (isPrimitive(value)) {
      // Owned here until a ref to it leaves the process (see "ownership"): not even encoded.
      this.objects.set(id, { s: 1, hasPv: true, pv: value, local: true });
      return this.newRef<T>(id);
    }
    const tagged = encodeValue(value);
    this.announceNested(tagged);
    if (tagged.d!.byteLength < INLINE_MAX_BYTES && !tagged.r?.length && !tagged.a?.length) {
      // Small and holding no refs (which the agent must count): owned here as well.
      this.objects.set(id, { s: 1, v: tagged, local: true });
      return this.newRef<T>(id);
    }
    this.storeTagged(id, tagged);
    return this.newRef<T>(id);
  }

  /** Record a value we produced and tell the agent (inline, or written to the store). */
  private storeTagged(id: string, tagged: Tagged): void {
    if (tagged.d!.byteLength >= INLINE_MAX_BYTES) {
      const loc = this.writeStored(id, tagged);
      this.objects.set(id, { s: 1, loc });
      this.send({ t: "seal", id, loc });
      // Now, not after the running code: the agent pre-faults the store's next warm file from
      // this seal, and a loop of puts that never yields to the event loop would hold it back.
      this.flush();
    } else {
      this.objects.set(id, { s: 1, v: tagged });
      this.send({ t: "put", id, v: tagged });
    }
  }

  /** Write a large value straight into the node's shared-memory store (no socket copy). */
  writeStored(id: string, tagged: Tagged): StoredLoc {
    const file = id.replace(/[^A-Za-z0-9._-]/g, "_");
    let p = path.join(this.storeDir, file);
    let rc: string | undefined;
    try {
      rc = writeObjectFile(this.storeDir, p, tagged.d!, !this.isWorker);
    } catch (e: any) {
      if (e.code !== "ENOSPC") throw e;
      // /dev/shm is full: write to the spill directory; the agent accounts for it there.
      try { fs.unlinkSync(p); } catch { /* partial file */ }
      p = path.join(this.spillDir, file);
      fs.writeFileSync(p, tagged.d!);
    }
    this.noteStoredBytes(tagged.d!.byteLength);
    const loc: StoredLoc = { e: tagged.e, size: tagged.d!.byteLength, path: p, node: this.nodeId };
    if (rc) loc.rc = rc;
    if (tagged.k) loc.k = tagged.k;
    if (tagged.r) loc.r = tagged.r;
    return loc;
  }

  /**
   * Large objects are freed when their last ObjectRef is garbage-collected, but an ObjectRef
   * is tiny: a loop that puts and drops 10 MB objects barely grows the JS heap, so V8 would
   * not collect for a long time while the store fills up. Collect after every
   * GC_EVERY_BYTES of stored objects this process wrote, so dropped refs are released. Reads
   * need no such push: what a read returns (a mapping or a copy) is memory V8 counts, and it
   * collects on its own, incrementally, as that grows. (A forced collection after every
   * 100 MB read cost the reader ~20-40 ms of a core, right when the next transfer needed it.)
   */
  noteStoredBytes(n: number): void {
    this.storedBytesSinceGc += n;
    if (this.storedBytesSinceGc < GC_EVERY_BYTES || this.gcScheduled) return;
    this.gcScheduled = true;
    setImmediate(() => {
      this.gcScheduled = false;
      this.storedBytesSinceGc = 0;
      (globalThis as any).gc?.();
    });
  }

  /** The value of an object this process knows is ready (re-located if it was spilled). */
  valueOf(id: string): Promise<unknown> {
    return this.readValue(id);
  }

  private markBlocked(delta: 1 | -1): void {
    if (!this.isWorker) return;
    const before = this.blockedDepth;
    this.blockedDepth += delta;
    if (before === 0 && this.blockedDepth === 1) this.send({ t: "blocked", returned: this.onBlocked?.() ?? [] });
    else if (before === 1 && this.blockedDepth === 0) this.send({ t: "unblocked" });
  }

  private subscribe(ids: string[]): void {
    const want: string[] = [];
    for (const id of ids) {
      let o = this.objects.get(id);
      if (!o) {
        o = { s: 0 };
        this.objects.set(id, o);
      }
      // A direct result arrives on its own path; the agent is asked only if it is handed back.
      if (o.s === 0 && !o.subscribed && !o.direct) {
        o.subscribed = true;
        want.push(id);
      }
    }
    if (want.length) this.send({ t: "sub", ids: want });
  }

  /**
   * A get() of the one call in flight to an actor that answers quickly: send it now and poll
   * the actor's socket a moment before the event loop sleeps (see quick-peer.ts).
   */
  private pollForAnswer(id: string): void {
    const last = this.lastDirect;
    if (last?.id !== id) return;
    const { path } = last;
    if (!path.peer || !path.writer || path.inflight.size !== 1 || !path.inflight.has(id)) return;
    path.writer.flush();
    path.peer.wait();
  }

  private whenReady(id: string): Promise<void> {
    const o = this.objects.get(id)!;
    if (o.s === 1) return Promise.resolve();
    return new Promise<void>((resolve) => (o.waiters ??= []).push(resolve));
  }

  async get(refOrRefs: ObjectRef<any> | ObjectRef<any>[], opts?: { timeoutMs?: number }): Promise<any> {
    if (refOrRefs instanceof ObjectRef && opts?.timeoutMs === undefined) {
      // One ref, no timeout (the hot path of a synchronous call): no arrays, no Promise.all.
      const o = this.objects.get(refOrRefs.id);
      if (o?.s !== 1) {
        this.pollForAnswer(refOrRefs.id);
        this.subscribe([refOrRefs.id]);
        this.markBlocked(1);
        try {
          await this.whenReady(refOrRefs.id);
        } finally {
          this.markBlocked(-1);
        }
      }
      const r = this.objects.get(refOrRefs.id)!;
      return r.hasPv ? r.pv : this.readValue(refOrRefs.id);
    }
    const many = Array.isArray(refOrRefs);
    const refs = many ? (refOrRefs as ObjectRef<any>[]) : [refOrRefs as ObjectRef<any>];
    for (const r of refs) {
      if (!(r instanceof ObjectRef)) throw new TypeError(`get() takes ObjectRefs, got ${typeof r === "object" ? JSON.stringify(r) : String(r)}`);
    }
    const pending = refs.filter((r) => this.objects.get(r.id)?.s !== 1);
    if (pending.length) {
      this.subscribe(pending.map((r) => r.id));
      const all = Promise.all(pending.map((r) => this.whenReady(r.id)));
      this.markBlocked(1);
      try {
        if (opts?.timeoutMs !== undefined) {
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new GetTimeoutError(`get() timed out after ${opts.timeoutMs} ms waiting for ${pending.length} object(s)`)),
              opts.timeoutMs,
            );
          });
          try {
            await Promise.race([all, timeout]);
          } finally {
            clearTimeout(timer);
          }
        } else {
          await all;
        }
      } finally {
        this.markBlocked(-1);
      }
    }
    const values = [];
    for (const r of refs) {
      const o = this.objects.get(r.id)!;
      values.push(o.hasPv ? o.pv : await this.readValue(r.id));
    }
    return many ? values : values[0];
  }

  /** Decode a ready object; re-locate it once if the store moved it (spilled) meanwhile. */
  private async readValue(id: string): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const o = this.objects.get(id)!;
      if (o.v) return decodeValue(o.v.e, o.v.d!, o.v.k);
      const loc = o.loc!;
      if (loc.e === 2 && !loc.path) throw new Error("object error without data");
      let bytes: Buffer;
      try {
        bytes = loc.g ? await readGrowing(loc.path, loc.size) : readStored(loc.path, loc.size);
      } catch (e: any) {
        if (e.code !== "ENOENT") throw e;
        if (attempt >= 3) {
          throw new ObjectLostError(`object ${id} was lost: its data (${loc.path}) is gone from node ${loc.node} although references to it remain`);
        }
        o.s = 0;
        o.subscribed = false;
        o.loc = undefined;
        this.subscribe([id]);
        await this.whenReady(id);
        continue;
      }
      return decodeValue(loc.e, bytes, loc.k);
    }
  }

  async wait(
    refs: ObjectRef<any>[],
    opts: { numReturns?: number; timeoutMs?: number } = {},
  ): Promise<[ObjectRef<any>[], ObjectRef<any>[]]> {
    const numReturns = opts.numReturns ?? 1;
    if (!Array.isArray(refs)) throw new TypeError("wait() takes an array of ObjectRefs");
    if (!Number.isInteger(numReturns) || numReturns < 0 || numReturns > refs.length) {
      throw new RangeError(`wait(): numReturns must be between 0 and ${refs.length}, got ${numReturns}`);
    }
    const isReady = (r: ObjectRef<any>) => this.objects.get(r.id)?.s === 1;
    const split = (): [ObjectRef<any>[], ObjectRef<any>[]] => {
      const ready: ObjectRef<any>[] = [];
      const not: ObjectRef<any>[] = [];
      for (const r of refs) (isReady(r) && ready.length < numReturns ? ready : not).push(r);
      return [ready, not];
    };
    let count = refs.reduce((n, r) => n + (isReady(r) ? 1 : 0), 0);
    if (count >= numReturns) return split();
    this.subscribe(refs.map((r) => r.id));
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        if (timer) clearTimeout(timer);
        resolve();
      };
      if (opts.timeoutMs !== undefined) timer = setTimeout(finish, opts.timeoutMs);
      for (const r of refs) {
        if (isReady(r)) continue;
        this.whenReady(r.id).then(() => {
          if (++count >= numReturns) finish();
        });
      }
    });
    return split();
  }

  // ---------------------------------------------------------------- tasks and actors

  private encodeArgs(args: unknown[]): ArgWire[] {
    return args.map((a) => {
      if (a instanceof ObjectRef) {
        this.announce(a.id);
        return { ref: a.id };
      }
      if (isPrimitive(a)) return { p: a };
      const tagged = encodeValue(a);
      this.announceNested(tagged);
      if (tagged.d!.byteLength >= INLINE_MAX_BYTES) {
        // Big arguments go through the store once instead of riding in the message.
        const id = this.newId();
        this.storeTagged(id, tagged);
        // The agent counts us as holder of this object; the task holds it too. Drop ours
        // right away: the task's hold keeps it alive until the task is done.
        this.objects.delete(id);
        setImmediate(() => this.send({ t: "decref", ids: [id] }));
        return { ref: id };
      }
      return { v: tagged };
    });
  }

  submitTask(fn: FnRef, args: unknown[], opts: RemoteOptions, generator: boolean): ObjectRef<any> {
    const id = this.newId();
    const ctx = this.taskContext.getStore() ?? this.current;
    this.objects.set(id, { s: 0 });
    const shape = this.shapeOf(opts);
    const spec: DirectSpec = { fn, args: this.encodeArgs(args), res: shape.res, o: shape.wire, p: ctx?.taskId };
    if (!generator && this.spread.offer(id, spec)) return this.newRef(id);
    const direct = !generator && shape.direct && DirectTasks.argsEligible(spec);
    if (!direct || !this.directTasks.submit(id, spec, shape.key)) {
      this.send({ t: "submit", id, ...spec, g: generator ? 1 : 0 });
      // Asked after the submit, so the agent counts this task first: a burst of tasks is never
      // left with a CPU fewer because a lease took it.
      if (direct) this.directTasks.wantLease(shape.key, id, spec);
    }
    return this.newRef(id);
  }

  // ---------------------------------------------------------------- direct tasks (see direct-tasks.ts)

  private readonly directTasks = ((core: Core) =>
    new DirectTasks({
      get jobId() { return core.jobId; },
      get namespace() { return core.namespace; },
      send: (m) => core.send(m as any),
      request: (m) => core.request(m),
      markDirect: (id) => core.markOwned(id),
      directResult: (id, v, loc, err, p) => core.directResult(id, v, loc, err, p),
      resubmit: (id, spec, maxRetries) => core.resubmit(id, spec, maxRetries),
    }))(this);

  /** SPREAD tasks: leases on workers of every node, tasks pushed to them from here. */
  private readonly spread = new SpreadTasks({
    nodeId: () => this.nodeId,
    jobId: () => this.jobId,
    namespace: () => this.namespace,
    request: (m) => this.request(m),
    send: (m) => this.send(m),
    // Owned here like any direct result (see "ownership" above).
    announce: (id) => this.markOwned(id),
    result: (id, v, loc, err, p) => this.directResult(id, v, loc, err, p),
    resubmit: (id, spec, maxRetries) => this.resubmit(id, spec, maxRetries),
  });

  private resubmit(id: string, spec: DirectSpec, maxRetries: number): void {
    // The agent owns the retry (and counts us as a holder of its result from the submit on).
    this.send({ t: "submit", id, ...spec, o: { ...spec.o, maxRetries }, g: 0 });
    const o = this.objects.get(id);
    if (!o) return;
    const wasLocal = o.local;
    o.local = false;
    o.direct = false;
    if (o.dropped) {
      // Our ref was dropped meanwhile: the retry still runs (it may have effects), its result is released.
      this.objects.delete(id);
      if (wasLocal) this.send({ t: "decref", ids: [id] });
      return;
    }
    // Someone may be waiting already: the agent tells us when the retry is done.
    if (o.s === 0 && o.waiters?.length) {
      o.subscribed = false;
      this.subscribe([id]);
    }
  }

  /** Demand and wire options of a remote function's options object, worked out once. */
  private shapeOf(opts: RemoteOptions): TaskShape {
    let sh = this.shapes.get(opts);
    if (!sh || sh.ns !== this.namespace) {
      const res = demandOf(opts, "task");
      const wire = taskWireOptions(opts, this.namespace);
      sh = { ns: this.namespace, res, key: leaseKey(res, wire), wire, direct: DirectTasks.shapeEligible(res, wire) };
      this.shapes.set(opts, sh);
    }
    return sh;
  }

  private readonly shapes = new WeakMap<RemoteOptions, TaskShape>();

  /** cancel(): direct tasks are cancelled on their path; the rest by the agent. */
  cancel(id: string, force: boolean, recursive: boolean): void {
    if (this.spread.cancel(id, force, recursive)) return;
    if (!this.directTasks.cancel(id, force, recursive)) this.send({ t: "cancel", id, force, recursive });
  }

  /**
   * The task `parent` running in this worker was cancelled recursively: cancel the tasks it
   * submitted. Those on a direct path (leased workers, SPREAD leases) are known only here;
   * those on the agent's path are cancelled by the agent (`viaAgent`: ask it, for a task the
   * agent does not know, one sent here by a leaseholder). Found by their parent (DirectSpec.p),
   * so nothing is recorded per task for this.
   */
  cancelChildren(parent: string, force: boolean, viaAgent: boolean): void {
    this.directTasks.cancelChildren(parent, force);
    this.spread.cancelChildren(parent, force);
    if (viaAgent) this.send({ t: "cancel", id: parent, force, recursive: true });
  }

  createActor(cls: FnRef, args: unknown[], opts: RemoteOptions): ActorHandleOf<any> {
    const id = this.newId();
    this.send({
      t: "createActor",
      id,
      fn: cls,
      args: this.encodeArgs(args),
      res: demandOf(opts, "actor"),
      o: actorWireOptions(opts, this.namespace),
    });
    return new ActorHandle(id, cls.n) as ActorHandleOf<any>;
  }

  callActor(actorId: string, method: string, args: unknown[]): ObjectRef<any> {
    const id = this.newId();
    this.objects.set(id, { s: 0 });
    const encoded = this.encodeArgs(args);
    let d = this.actorPaths.get(actorId);
    if (!d) this.actorPaths.set(actorId, (d = { agentOutstanding: 0, inflight: new Set() }));
    // Straight to the actor when it listens for us, its arguments are plain values, and no
    // call of ours is still on the way through the agent (calls must run in order).
    if (d.writer && d.agentOutstanding === 0 && plainArgs(encoded)) {
      this.markOwned(id);
      d.inflight.add(id);
      d.writer.send({ t: "actorCall", id, m: method, args: encoded });
      this.lastDirect = { id, path: d };
    } else {
      d.agentOutstanding++;
      this.agentCalls.set(id, actorId);
      this.send({ t: "call", id, actor: actorId, m: method, args: encoded });
    }
    return this.newRef(id);
  }

  /** How calls reach each actor this process called: through the agent, or directly. */
  private readonly actorPaths = new Map<string, ActorPath>();
  /** The latest call sent straight to an actor, and its path: a get() of it alone may poll for the answer. */
  private lastDirect?: { id: string; path: ActorPath };
  private readonly agentCalls = new Map<string, string>();

  /** kill(): later calls must go through the agent, which then knows the actor is dead. */
  killActor(actorId: string, noRestart: boolean): void {
    const d = this.actorPaths.get(actorId);
    if (d) d.writer = undefined;
    this.send({ t: "kill", actor: actorId, noRestart });
  }

  private connectDirect(actorId: string, sock: string): void {
    let d = this.actorPaths.get(actorId);
    if (!d) this.actorPaths.set(actorId, (d = { agentOutstanding: 0, inflight: new Set() }));
    if (d.socket && !d.socket.destroyed) return;
    const path = d;
    const reader = new FrameReader(
      (msgs) => {
        path.peer?.arrived();
        for (const m of msgs as DoneMsg[]) {
          if (m?.t !== "done" || !path.inflight.delete(m.id)) continue;
          this.directResult(m.id, m.v, m.loc, m.err, "p" in m ? m : undefined);
        }
      },
      () => socket.destroy(),
    );
    const socket = connectFrames(sock, reader);
    path.socket = socket;
    path.peer = QuickPeer.off ? undefined : new QuickPeer(socket);
    socket.on("connect", () => (path.writer = new FrameWriter(socket)));
    socket.on("error", () => {});
    socket.on("close", () => {
      // The actor's process went away: calls in flight fail as they would through the agent.
      path.writer = undefined;
      path.socket = undefined;
      for (const id of path.inflight) this.directResult(id, undefined, undefined, { kind: "ActorDiedError", message: `the actor ${actorId} died while running the call` });
      path.inflight.clear();
    });
  }

  private directResult(id: string, v?: Tagged, loc?: StoredLoc, err?: WireError, p?: { p?: unknown }): void {
    const o = this.objects.get(id);
    if (o?.local) {
      if (loc) {
        // A stored result is a file the agent's store must account for and free: always told.
        o.local = false;
        this.send({ t: "direct", id, actor: "" });
        this.send({ t: "directDone", id, loc });
        if (o.dropped) this.send({ t: "decref", ids: [id] });
      }
      if (o.dropped) {
        this.objects.delete(id);
        return;
      }
    } else {
      this.send({ t: "directDone", id, v: p ? encodeValue(p.p) : v, loc, err });
    }
    if (!o) return;
    // Written on another node (by a worker leased there): the agent copies it here when it is
    // read, and says so to whoever subscribed.
    if (loc && loc.node !== this.nodeId) {
      o.direct = false; // from now on the agent's: a get subscribes there
      if (o.waiters?.length) this.subscribe([id]);
      return;
    }
    o.s = 1;
    o.direct = false;
    if (err) o.v = encodeErrorValue(err);
    else if (p) {
      o.hasPv = true;
      o.pv = p.p;
    } else if (v) o.v = v;
    else o.loc = loc;
    const ws = o.waiters;
    o.waiters = undefined;
    if (ws) for (const w of ws) w();
  }

  async nextGeneratorItem<T>(taskId: string, i: number, completion: ObjectRef<number>): Promise<ObjectRef<T> | undefined> {
    const itemId = `${taskId}#${i}`;
    this.subscribe([itemId]);
    const item = this.whenReady(itemId).then(() => "item" as const);
    const end = this.get(completion).then(
      (n: number) => n,
      (e: Error) => e,
    );
    const first = await Promise.race([item, end]);
    if (first === "item") return this.newRef<T>(itemId);
    if (first instanceof Error) {
      if (this.objects.get(itemId)?.s === 1) return this.newRef<T>(itemId);
      this.forget(itemId);
      throw first;
    }
    if (i < (first as number)) {
      await item;
      return this.newRef<T>(itemId);
    }
    this.forget(itemId);
    return undefined;
  }

  private forget(id: string): void {
    if (!this.localCounts.has(id)) {
      this.objects.delete(id);
      this.send({ t: "unsub", ids: [id] });
    }
  }

  // ---------------------------------------------------------------- messages from the agent

  private onMessage(m: AgentToProc): void {
    switch (m.t) {
      case "leaseLost":
        if (this.spread.leaseLost(m.worker, m.kind, m.message)) return;
        this.directTasks.leaseLost(m.worker, m.kind, m.message);
        return;
      case "actorDirect":
        this.connectDirect(m.actor, m.sock);
        return;
      case "ready": {
        for (const it of m.items) {
          if (it.ms !== undefined) this.directTasks.learn(it.id, it.ms);
          const viaAgent = this.agentCalls.get(it.id);
          if (viaAgent !== undefined) {
            this.agentCalls.delete(it.id);
            this.actorPaths.get(viaAgent)!.agentOutstanding--;
          }
          let o = this.objects.get(it.id);
          if (!o) continue; // nobody here cares any more
          o.s = 1;
          o.subscribed = false;
          if (it.v) o.v = it.v;
          else if (it.loc) o.loc = it.loc;
          const ws = o.waiters;
          o.waiters = undefined;
          if (ws) for (const w of ws) w();
        }
        return;
      }
      case "rep": {
        const r = this.replies.get(m.rid);
        if (!r) return;
        this.replies.delete(m.rid);
        if (m.err) r.reject(fromWireError(m.err as WireError));
        else r.resolve(m.value);
        return;
      }
      case "gc": {
        // The store is filling up: collect now so that dropped ObjectRefs are released.
        (globalThis as any).gc?.();
        return;
      }
      default:
        this.onExecMessage?.(m);
    }
  }

  /** Value a worker got inline with a task, so `get` on the same ref needs no round trip. */
  seedObject(id: string, v?: Tagged, loc?: StoredLoc): void {
    if (!this.objects.has(id)) this.objects.set(id, v ? { s: 1, v } : { s: 1, loc });
  }

  /** Forget a seeded value once the task has decoded it, unless an ObjectRef here still needs it. */
  unseedObject(id: string): void {
    const o = this.objects.get(id);
    if (o && !this.localCounts.has(id) && !o.waiters?.length && !o.subscribed) this.objects.delete(id);
  }

  errorOf(t: Tagged): Error | undefined {
    return tryDecodeError(t);
  }

  context(): RuntimeContext {
    const c = this.taskContext.getStore() ?? this.current;
    return {
      jobId: this.jobId,
      nodeId: this.nodeId,
      workerId: this.workerId,
      taskId: c?.taskId,
      actorId: c?.actorId,
      namespace: this.namespace,
      gpuIds: c?.gpuIds ?? [],
    };
  }
}

interface TaskShape {
  ns: string;
  res: Record<string, number>;
  key: string;
  /** shared by every task of the shape: never mutated (a retry copies it) */
  wire: Record<string, unknown>;
  /** tasks of this shape may go to a leased worker */
  direct: boolean;
}

/** The object's bytes: exactly `size` of them (a reused store file may be longer). */
/** A stored object's bytes: its file mapped when the native helpers can, else read into memory. */
function readStored(file: string, size: number): Buffer {
  const mapped = mapStoredFile(file, size);
  return mapped ? Buffer.from(mapped, 0, size) : readExactly(file, size);
}

function readExactly(file: string, size: number): Buffer {
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const n = fs.readSync(fd, buf, off, size - off, off);
      if (n === 0) throw Object.assign(new Error(`${file} holds ${off} bytes, expected ${size}`), { code: "ENOENT" });
      off += n;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The job's environment (`tray submit --env K=V`): every task and actor of the job runs with
 * it, under its own runtimeEnv. It travels as the task's env (so its workers are started
 * with it), including TRAY_JOB_ENV itself so that tasks they submit carry it on.
 */
let jobEnvCache: Record<string, string> | undefined;
function jobEnv(): Record<string, string> {
  if (!jobEnvCache) {
    const raw = process.env.TRAY_JOB_ENV;
    try {
      jobEnvCache = raw ? { ...JSON.parse(raw), TRAY_JOB_ENV: raw } : {};
    } catch {
      jobEnvCache = {};
    }
  }
  return jobEnvCache!;
}

function envOf(o: RemoteOptions): Record<string, string> | undefined {
  const j = jobEnv();
  const own = o.runtimeEnv?.env;
  if (!own && j.TRAY_JOB_ENV === undefined) return undefined;
  return { ...j, ...own };
}

function taskWireOptions(o: RemoteOptions, namespace: string): Record<string, unknown> {
  const w: Record<string, unknown> = { ns: namespace };
  if (o.maxRetries !== undefined) w.maxRetries = o.maxRetries;
  if (o.retryExceptions) w.retryExceptions = true;
  if (o.schedulingStrategy !== undefined) w.strategy = o.schedulingStrategy;
  const env = envOf(o);
  if (env) w.env = env;
  return w;
}

function actorWireOptions(o: RemoteOptions, namespace: string): Record<string, unknown> {
  const w: Record<string, unknown> = { ns: namespace };
  if (o.maxRestarts !== undefined) w.maxRestarts = o.maxRestarts;
  if (o.maxTaskRetries !== undefined) w.maxTaskRetries = o.maxTaskRetries;
  if (o.maxConcurrency !== undefined) w.maxConcurrency = o.maxConcurrency;
  if (o.name !== undefined) {
    w.name = o.name;
    w.namespace = o.namespace ?? namespace;
  }
  if (o.lifetime === "detached") w.detached = true;
  if (o.getIfExists) w.getIfExists = true;
  if (o.schedulingStrategy !== undefined) w.strategy = o.schedulingStrategy;
  const env = envOf(o);
  if (env) w.env = env;
  return w;
}
