// A worker process: started by the node agent, it runs tasks of one job one at a time, or
// hosts one actor. It imports the job's bundle once (by content hash) and finds functions by
// their remote() index in it.
import fs from "node:fs";
import net from "node:net";
import { FrameReader, FrameWriter } from "../../src/protocol/frame.js";
import { QuickPeer } from "../../src/protocol/quick-peer.js";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Core } from "../../src/runtime/core.js";
import { setCore } from "../../src/runtime/context.js";
import * as runtime from "../../src/runtime/index.js";
import { beginBundleLoad, endBundleLoad, lookupFunction, type FnRef } from "../../src/runtime/remote.js";
import { decodeValue, encodeValue } from "../../src/runtime/serialize.js";
import { INLINE_MAX_BYTES, ENC_ERROR, type Tagged, type StoredLoc } from "../../src/protocol/values.js";
import { toWireError, type WireError } from "../../src/runtime/errors.js";
import { isPrimitive, type AgentToProc, type Primitive, type ResolvedArg } from "../../src/protocol/local.js";

/** Environment the agent passes to every worker and driver. */
export function coreFromEnv(isWorker: boolean): Core {
  const env = process.env;
  // Job bundles carry an inline source map: stacks of user errors name the user's file and
  // line (job.ts:12), not the bundle's.
  process.setSourceMapsEnabled?.(true);
  const need = (k: string) => {
    const v = env[k];
    if (!v) throw new Error(`${k} is not set: workers are started by the tray agent, not by hand`);
    return v;
  };
  const core = new Core(
    need("TRAY_AGENT_SOCKET"),
    need("TRAY_WORKER_ID"),
    need("TRAY_NODE_ID"),
    env.TRAY_JOB_ID ?? "",
    env.TRAY_NAMESPACE || "default",
    need("TRAY_STORE_DIR"),
    need("TRAY_SPILL_DIR"),
    isWorker,
  );
  setCore(core);
  // Job bundles import "tray" as this global (see src/bundle): one runtime per process.
  (globalThis as any).__tray = runtime;
  return core;
}

const loaded = new Map<string, Promise<any>>();
let loadChain: Promise<unknown> = Promise.resolve();

/** Import a job bundle once (its module namespace); loads are serialised so remote() indices stay per bundle. */
export function loadBundle(hash: string): Promise<any> {
  let p = loaded.get(hash);
  if (!p) {
    const file = path.join(process.env.TRAY_BUNDLE_DIR ?? "", `${hash}.mjs`);
    p = (loadChain = loadChain.then(async () => {
      beginBundleLoad(hash);
      try {
        return await import(pathToFileURL(file).href);
      } finally {
        endBundleLoad();
      }
    })) as Promise<any>;
    loaded.set(hash, p);
  }
  return p;
}

/** Bundles whose import has finished: their functions are found without a wait. */
const ready = new Set<string>();

export async function resolveFn(core: Core, fn: FnRef): Promise<Function> {
  if (fn.b && !ready.has(fn.b)) {
    await loadBundle(fn.b);
    ready.add(fn.b);
  }
  return lookupFunction(fn);
}

/** The function when its bundle is loaded already (the common case), else undefined. */
function loadedFn(fn: FnRef): Function | undefined {
  return !fn.b || ready.has(fn.b) ? lookupFunction(fn) : undefined;
}

/** Arguments that all came inline decode without a wait. */
function inlineArgs(args: ResolvedArg[]): unknown[] | undefined {
  const out: unknown[] = [];
  for (const a of args) {
    if ("ref" in a) return undefined;
    out.push("p" in a ? a.p : decodeValue(a.v.e, a.v.d!, a.v.k));
  }
  return out;
}

const isThenable = (x: any): x is PromiseLike<unknown> => x !== null && typeof x === "object" && typeof x.then === "function";

class DependencyError extends Error {
  constructor(readonly wire: Tagged) {
    super("dependency failed");
  }
}

async function decodeArgs(core: Core, args: ResolvedArg[]): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const a of args) {
    if ("ref" in a) {
      core.seedObject(a.ref, a.v, a.loc);
      if (a.v?.e === ENC_ERROR) throw new DependencyError(a.v);
      // From the store; if it was spilled since the agent sent its location, the core asks
      // the agent where it is now.
      try {
        out.push(a.v ? decodeValue(a.v.e, a.v.d!, a.v.k) : await core.valueOf(a.ref));
      } finally {
        core.unseedObject(a.ref);
      }
    } else if ("p" in a) {
      out.push(a.p);
    } else {
      out.push(decodeValue(a.v.e, a.v.d!, a.v.k));
    }
  }
  return out;
}

/** Encode a result: inline, or written to the store when large. */
function encodeResult(core: Core, id: string, value: unknown): { v?: Tagged; loc?: StoredLoc } {
  const t = encodeValue(value);
  core.announceNested(t); // refs it returns must be known to the agent before the result is
  if (t.d!.byteLength >= INLINE_MAX_BYTES) return { loc: core.writeStored(id, t) };
  return { v: t };
}

/**
 * TRAY_CPU_PROF_DIR (given to `tray up`): a worker writes a CPU profile of its first
 * TRAY_WORKER_PROF_MS (default 5000) ms there. Workers end by SIGKILL, so --cpu-prof (written
 * at a clean exit) would never be written; the inspector's profiler is stopped on a timer.
 */
async function profileWorker(): Promise<void> {
  const dir = process.env.TRAY_CPU_PROF_DIR;
  if (!dir) return;
  const { Session } = await import("node:inspector");
  const session = new Session();
  session.connect();
  const post = (method: string) => new Promise<any>((res, rej) => session.post(method, (e, r) => (e ? rej(e) : res(r))));
  await post("Profiler.enable");
  await post("Profiler.start");
  setTimeout(async () => {
    const { profile } = await post("Profiler.stop");
    fs.writeFileSync(path.join(dir, `worker-${process.pid}.cpuprofile`), JSON.stringify(profile));
  }, Number(process.env.TRAY_WORKER_PROF_MS) || 5000);
}

export async function runWorker(): Promise<void> {
  await profileWorker();
  const core = coreFromEnv(true);
  core.send({ t: "hello", role: "worker", pid: process.pid, workerId: core.workerId });
  const queue: TaskMsg[] = [];
  let running = false;
  /** The task running now (one at a time), while it runs. */
  let current: TaskMsg | undefined;
  let actor: ActorState | undefined;

  /**
   * cancel() of a task sent here (by a leaseholder, or by the agent): one still queued is
   * dropped and answered cancelled; for the running one, `r` (recursive) cancels the tasks it
   * submitted — those on this process's direct paths (leased workers here and on other
   * nodes) from here, those on the agent's path by the agent (asked here when the task came
   * from a leaseholder: the agent does not know it; otherwise the agent has done it already).
   * `f` (force) comes from the agent, which kills this worker once it has the answer.
   */
  const onCancel = (m: { id: string; r?: unknown; f?: unknown }) => {
    const i = queue.findIndex((t) => t.id === m.id);
    if (i >= 0) {
      const [t] = queue.splice(i, 1);
      sendDone(core, t!, performance.now(), { err: { kind: "TaskCancelledError", message: "cancelled before it started" } });
    }
    const run = current?.id === m.id ? current : undefined;
    if (run && m.r) core.cancelChildren(m.id, !!m.f, !!run.replyTo);
    if (m.f) core.send({ t: "cancelAck", id: m.id, kill: !!run });
  };

  core.onBlocked = () => {
    // Our current task waits on others: give back what is queued behind it so other workers
    // can run it (otherwise a nested get could wait on a task stuck behind it). Tasks sent
    // directly by a leaseholder go back to it; the agent's go back to the agent.
    const ids: string[] = [];
    const direct = new Map<FrameWriter, string[]>();
    for (const t of queue) {
      if (!t.replyTo) ids.push(t.id);
      else direct.set(t.replyTo, [...(direct.get(t.replyTo) ?? []), t.id]);
    }
    queue.length = 0;
    for (const [w, back] of direct) w.send({ t: "returned", ids: back });
    return ids;
  };

  // A submitter that leased this worker sends tasks here directly; results go back the same way.
  if (process.env.TRAY_WORKER_SOCK) {
    listenDirect(process.env.TRAY_WORKER_SOCK, (m) => {
      if (m.t === "task") {
        if (core.jobId === "" && m.job) core.jobId = m.job;
        if (m.ns) core.namespace = m.ns;
        if (core.blocked) {
          // The running task waits on others: a task queued behind it might be one of them.
          m.replyTo!.send({ t: "returned", ids: [m.id] });
          return;
        }
        queue.push(m as TaskMsg);
        void pump();
      } else if (m.t === "cancel") {
        // (never with force: that comes from the agent, which kills the worker)
        onCancel({ id: m.id, r: m.r });
      }
    });
    // (No polling here, see quick-peer.ts: a leased worker mostly serves pipelined tasks,
    // several workers to one submitter, and would poll on the cores they and the agent need.)
  }

  const pump = async () => {
    if (running) return;
    running = true;
    while (queue.length) {
      current = queue.shift()!;
      const running = runTask(core, current);
      if (running) await running;
    }
    current = undefined;
    running = false;
  };

  const pumpActor = () => {
    while (actor && actor.inFlight < actor.maxConcurrency && actor.calls.length) {
      const c = actor.calls.shift()!;
      actor.inFlight++;
      const running = runActorCall(core, actor, c);
      if (!running) {
        actor.inFlight--; // done already (a plain method): no promise to wait for
        continue;
      }
      running.finally(() => {
        actor!.inFlight--;
        pumpActor();
      });
    }
  };

  core.onExecMessage = (m) => {
    switch (m.t) {
      case "task":
        if (core.jobId === "") core.jobId = m.job;
        if (m.ns) core.namespace = m.ns;
        queue.push(m);
        void pump();
        return;
      case "cancel":
        // A task still queued here is dropped, and whoever sent it is told it is over (the
        // agent was waiting for a "done" that never came: the task's get() hung and the
        // worker's lease was never released). A task already running finishes unless the
        // agent kills the worker (force); its result is reported cancelled.
        onCancel(m);
        return;
      case "actorInit":
        if (core.jobId === "") core.jobId = m.job;
        if (m.ns) core.namespace = m.ns;
        void initActor(core, m).then((instance) => {
          if (instance === undefined) return;
          actor = { ...base(m), instance, maxConcurrency: m.maxConcurrency, calls: actor?.calls ?? [] };
          pumpActor();
          if (m.sock) listenDirect(m.sock, (c) => {
            if (c.t !== "actorCall") return;
            actor!.calls.push(c as ActorCallMsg);
            pumpActor();
          }, () => actor!.inFlight === 0 && actor!.calls.length === 0);
        });
        actor ??= base(m);
        return;
      case "actorCall":
        if (!actor) return;
        actor.calls.push(m);
        pumpActor();
        return;
    }
  };
}

interface ActorState {
  id: string;
  instance: any;
  name: string;
  gpus: number[];
  maxConcurrency: number;
  inFlight: number;
  calls: ActorCallMsg[];
}

/** An actor not yet constructed: calls queue until the constructor has run. */
function base(m: Extract<AgentToProc, { t: "actorInit" }>): ActorState {
  return { id: m.actor, instance: undefined, name: m.fn.n, gpus: m.gpus ?? [], maxConcurrency: 0, inFlight: 0, calls: [] };
}

/** A stack without tray's own frames (the worker/driver below the user's code). */
export function trimStack(stack: string): string {
  const self = process.argv[1] ?? "\0";
  return stack
    .split("\n")
    .filter((l) => !(/^\s+at /.test(l) && (l.includes(self) || /[( ]node:(async_hooks|internal\/process)/.test(l))))
    .join("\n");
}

/** A user error for the wire, its stack trimmed of tray's frames. */
function userError(e: unknown, desc: string): WireError {
  const w = toWireError(e, desc);
  if (w.stack) w.stack = trimStack(w.stack);
  return w;
}

type TaskMsg = Extract<AgentToProc, { t: "task" }> & { replyTo?: FrameWriter };

/**
 * Run one task. A plain function with inline arguments whose bundle is loaded completes
 * within this turn (no promise): the common case of a tiny task. The rest goes through
 * runTaskAsync. This worker runs its tasks one at a time, so the running task's context is a
 * plain field, not an AsyncLocalStorage (whose promise hooks would tax every await).
 */
function runTask(core: Core, m: TaskMsg): void | Promise<void> {
  const start = performance.now();
  const fn = m.g ? undefined : loadedFn(m.fn);
  const args = fn && inlineArgs(m.args);
  if (!args) return runTaskAsync(core, m, start);
  core.current = { taskId: m.id, gpuIds: m.gpus ?? [] };
  let result: unknown;
  try {
    result = fn!(...args);
  } catch (e) {
    core.current = undefined;
    sendDone(core, m, start, { err: userError(e, m.fn.n) });
    return;
  }
  if (isThenable(result)) {
    return Promise.resolve(result).then(
      (v) => {
        core.current = undefined;
        sendDone(core, m, start, taskResult(core, m, v));
      },
      (e) => {
        core.current = undefined;
        sendDone(core, m, start, { err: userError(e, m.fn.n) });
      },
    );
  }
  core.current = undefined;
  let out: DoneOut;
  try {
    out = taskResult(core, m, result);
  } catch (e) {
    out = { err: userError(e, m.fn.n) };
  }
  sendDone(core, m, start, out);
}

/** A submitter that sent the task directly takes a primitive result as itself. */
function taskResult(core: Core, m: TaskMsg, result: unknown): DoneOut {
  return m.replyTo && isPrimitive(result) ? { p: result } : encodeResult(core, m.id, result);
}


/** The general path: a bundle to load, arguments from the store, generators. */
async function runTaskAsync(core: Core, m: TaskMsg, start: number): Promise<void> {
  // (start is reset below when the function's bundle had to be imported first)
  let out: DoneOut;
  try {
    let fn = loadedFn(m.fn);
    if (!fn) {
      fn = await resolveFn(core, m.fn);
      // The bundle's import (once per worker) is not the function's run time, which tells
      // submitters and the agent how deep to pipeline its tasks.
      start = performance.now();
    }
    const args = inlineArgs(m.args) ?? (await decodeArgs(core, m.args));
    core.current = { taskId: m.id, gpuIds: m.gpus ?? [] };
    try {
      if (m.g) {
        let i = 0;
        for await (const item of (fn as (...a: unknown[]) => AsyncIterable<unknown>)(...args)) {
          const enc = encodeResult(core, `${m.id}#${i}`, item);
          core.send({ t: "yield", id: m.id, i: i++, ...enc });
        }
        out = { v: encodeValue(i) };
      } else {
        let result = fn(...args);
        if (isThenable(result)) result = await result;
        out = taskResult(core, m, result);
      }
    } finally {
      core.current = undefined;
    }
  } catch (e) {
    if (e instanceof DependencyError) out = { v: e.wire };
    else out = { err: userError(e, m.fn.n) };
  }
  sendDone(core, m, start, out);
}

async function initActor(core: Core, m: Extract<AgentToProc, { t: "actorInit" }>): Promise<any> {
  try {
    const cls = (await resolveFn(core, m.fn)) as new (...a: unknown[]) => any;
    const args = await decodeArgs(core, m.args);
    // The actor is this process's only tenant: its context holds for everything it runs.
    core.current = { actorId: m.actor, gpuIds: m.gpus ?? [] };
    const instance = new cls(...args);
    core.send({ t: "actorReady", actor: m.actor });
    return instance;
  } catch (e) {
    const err = e instanceof DependencyError ? { kind: "TaskError", message: "a constructor argument failed" } : toWireError(e, `${m.fn.n}.constructor`);
    core.send({ t: "actorReady", actor: m.actor, err });
    return undefined;
  }
}

/** A direct call carries the writer its result goes back to (see listenDirect). */
type ActorCallMsg = Extract<AgentToProc, { t: "actorCall" }> & { replyTo?: FrameWriter };
/** What arrives on a worker's or actor's own socket, tagged with where to answer. */
type DirectMsg = (Extract<AgentToProc, { t: "actorCall" | "task" | "cancel" }> & { replyTo?: FrameWriter }) & Record<string, any>;

/**
 * The actor's own socket (and a leased worker's): its creator sends calls here directly, so a
 * call costs one hop each way instead of two through the agent. The agent is told of each call
 * by the caller. With `idle` (actors), an actor that has answered everything polls for its
 * caller's next call (see quick-peer.ts).
 */
function listenDirect(sock: string, onCall: (c: DirectMsg) => void, idle?: () => boolean): void {
  try { fs.unlinkSync(sock); } catch { /* fresh */ }
  const server = net.createServer((socket) => {
    const writer = new FrameWriter(socket);
    // A caller that calls again as soon as it has our answer (see quick-peer.ts).
    const peer = QuickPeer.off || !idle ? undefined : new QuickPeer(socket);
    const answered = () => {
      if (!idle!()) return; // a call still runs: its answer is not sent yet
      writer.flush();
      peer!.wait();
    };
    // Functions this submitter has named on this connection: a task carries its function in
    // full once, then only its number (`fi`), so a tiny task is a few bytes on the wire.
    const fns: FnRef[] = [];
    const reader = new FrameReader(
      (msgs) => {
        peer?.arrived();
        // After the answers that this frame's calls queue (their flush is queued first).
        if (peer) process.nextTick(answered);
        for (const m of msgs as DirectMsg[]) {
          if (!m || typeof m.id !== "string") continue;
          if (m.t === "task" && typeof m.fi === "number") {
            if (m.fn) fns[m.fi] = m.fn;
            else m.fn = fns[m.fi];
          }
          const ok =
            (m.t === "actorCall" && typeof m.m === "string" && Array.isArray(m.args)) ||
            (m.t === "task" && typeof m.fn === "object" && Array.isArray(m.args)) ||
            m.t === "cancel";
          if (!ok) continue;
          m.replyTo = writer;
          onCall(m);
        }
      },
      () => socket.destroy(),
    );
    socket.on("data", (d) => reader.push(d));
    socket.on("error", () => {});
  });
  server.listen(sock, () => fs.chmodSync(sock, 0o600));
  server.on("error", (e) => console.error(`[worker] direct actor socket failed: ${e.message}`));
  process.on("exit", () => {
    try { fs.unlinkSync(sock); } catch { /* gone */ }
  });
}

/**
 * Run one actor call. A method that returns a plain value, called with inline arguments on an
 * actor that runs one call at a time, completes within this turn (no promise, no wait): the
 * common case of a tiny call. Anything else goes through runActorCallAsync.
 */
function runActorCall(core: Core, actor: ActorState, c: ActorCallMsg): void | Promise<void> {
  const start = performance.now();
  const args = actor.maxConcurrency <= 1 ? inlineArgs(c.args) : undefined;
  if (!args) return runActorCallAsync(core, actor, c, start);
  let result: unknown;
  core.current = { taskId: c.id, actorId: actor.id, gpuIds: actor.gpus };
  try {
    const method = actor.instance[c.m];
    if (typeof method !== "function") throw new TypeError(`actor ${actor.name} has no method "${c.m}"`);
    result = method.apply(actor.instance, args);
  } catch (e) {
    core.current = actorContext(actor);
    sendDone(core, c, start, { err: userError(e, `${actor.name}.${c.m}`) });
    return;
  }
  if (isThenable(result)) {
    // An async method: its context holds until it settles (calls run one at a time).
    return Promise.resolve(result).then(
      (v) => {
        core.current = actorContext(actor);
        sendDone(core, c, start, actorResult(core, c, v));
      },
      (e) => {
        core.current = actorContext(actor);
        sendDone(core, c, start, { err: userError(e, `${actor.name}.${c.m}`) });
      },
    );
  }
  core.current = actorContext(actor);
  try {
    sendDone(core, c, start, actorResult(core, c, result));
  } catch (e) {
    sendDone(core, c, start, { err: userError(e, `${actor.name}.${c.m}`) });
  }
}

const actorContext = (actor: ActorState) => ({ actorId: actor.id, gpuIds: actor.gpus });

/** A direct caller takes a primitive result as itself. */
function actorResult(core: Core, c: ActorCallMsg, result: unknown): DoneOut {
  return c.replyTo && isPrimitive(result) ? { p: result } : encodeResult(core, c.id, result);
}

type DoneOut = { v?: Tagged; loc?: StoredLoc; err?: WireError; p?: Primitive };

/** A task's or call's outcome, to whoever sent it (a direct submitter, or the agent). */
function sendDone(core: Core, c: { id: string; replyTo?: FrameWriter }, start: number, out: DoneOut): void {
  const done: DoneOut & { t: "done"; id: string; ms: number } = { t: "done", id: c.id, ms: performance.now() - start };
  if (out.v) done.v = out.v;
  if (out.loc) done.loc = out.loc;
  if (out.err) done.err = out.err;
  if ("p" in out) done.p = out.p; // absent, not undefined: `p` present means a primitive result
  if (c.replyTo) c.replyTo.send(done);
  else core.send(done);
}

/** The general path: arguments from the store, concurrent calls (each with its own context). */
async function runActorCallAsync(core: Core, actor: ActorState, c: ActorCallMsg, start: number): Promise<void> {
  let out: DoneOut;
  try {
    const method = actor.instance[c.m];
    if (typeof method !== "function") throw new TypeError(`actor ${actor.name} has no method "${c.m}"`);
    const args = inlineArgs(c.args) ?? (await decodeArgs(core, c.args));
    const ctx = { taskId: c.id, actorId: actor.id, gpuIds: actor.gpus };
    let result: unknown;
    if (actor.maxConcurrency > 1) {
      // Calls interleave: each needs its own context across its awaits.
      result = await core.taskContext.run(ctx, () => method.apply(actor.instance, args));
    } else {
      core.current = ctx;
      try {
        result = method.apply(actor.instance, args);
        if (isThenable(result)) result = await result;
      } finally {
        core.current = actorContext(actor);
      }
    }
    out = actorResult(core, c, result);
  } catch (e) {
    if (e instanceof DependencyError) out = { v: e.wire };
    else out = { err: userError(e, `${actor.name}.${c.m}`) };
  }
  sendDone(core, c, start, out);
}

