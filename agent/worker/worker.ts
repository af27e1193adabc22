// A worker process: started by the node agent, it runs tasks of one job one at a time, or
// hosts one actor. It imports the job's bundle once (by content hash) and finds functions by
// their remote() index in it.
import fs from "node:fs";
import net from "node:net";
import { FrameReader, FrameWriter } from "../../src/protocol/frame.js";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Core } from "../../src/runtime/core.js";
import { setCore } from "../../src/runtime/context.js";
import * as runtime from "../../src/runtime/index.js";
import { beginBundleLoad, endBundleLoad, lookupFunction, type FnRef } from "../../src/runtime/remote.js";
import { decodeValue, encodeValue } from "../../src/runtime/serialize.js";
import { INLINE_MAX_BYTES, ENC_ERROR, type Tagged, type StoredLoc } from "../../src/protocol/values.js";
import { toWireError, type WireError } from "../../src/runtime/errors.js";
import type { AgentToProc, ResolvedArg } from "../../src/protocol/local.js";

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

export async function resolveFn(core: Core, fn: FnRef): Promise<Function> {
  if (fn.b) await loadBundle(fn.b);
  return lookupFunction(fn);
}

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
    } else {
      out.push(decodeValue(a.v.e, a.v.d!, a.v.k));
    }
  }
  return out;
}

/** Encode a result: inline, or written to the store when large. */
function encodeResult(core: Core, id: string, value: unknown): { v?: Tagged; loc?: StoredLoc } {
  const t = encodeValue(value);
  if (t.d!.byteLength >= INLINE_MAX_BYTES) return { loc: core.writeStored(id, t) };
  return { v: t };
}

export async function runWorker(): Promise<void> {
  const core = coreFromEnv(true);
  core.send({ t: "hello", role: "worker", pid: process.pid, workerId: core.workerId });
  const queue: TaskMsg[] = [];
  let running = false;
  let actor: ActorState | undefined;

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
        if (core.jobId === "") core.jobId = m.job;
        if (m.ns) core.namespace = m.ns;
        queue.push(m as TaskMsg);
        void pump();
      } else if (m.t === "cancel") {
        const i = queue.findIndex((t) => t.id === m.id);
        if (i >= 0) {
          queue.splice(i, 1);
          m.replyTo!.send({ t: "done", id: m.id, ms: 0, err: { kind: "TaskCancelledError", message: "cancelled before it started" } });
        }
      }
    });
  }

  const pump = async () => {
    if (running) return;
    running = true;
    while (queue.length) {
      const m = queue.shift()!;
      await runTask(core, m);
    }
    running = false;
  };

  const pumpActor = () => {
    while (actor && actor.inFlight < actor.maxConcurrency && actor.calls.length) {
      const c = actor.calls.shift()!;
      actor.inFlight++;
      runActorCall(core, actor, c).finally(() => {
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
      case "cancel": {
        // A task still queued here is dropped, and the agent is told it is over (it was
        // waiting for a "done" that never came: the task's get() hung and the worker's
        // lease was never released). A task already running finishes; the agent reports
        // it as cancelled.
        const i = queue.findIndex((t) => t.id === m.id);
        if (i >= 0) {
          queue.splice(i, 1);
          core.send({ t: "done", id: m.id, ms: 0, err: { kind: "TaskCancelledError", message: "cancelled before it started" } });
        }
        return;
      }
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
          });
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

async function runTask(core: Core, m: TaskMsg): Promise<void> {
  const start = performance.now();
  let out: { v?: Tagged; loc?: StoredLoc; err?: WireError; retryable?: boolean };
  try {
    const fn = await resolveFn(core, m.fn);
    const args = await decodeArgs(core, m.args);
    out = await core.taskContext.run({ taskId: m.id, gpuIds: m.gpus ?? [] }, async () => {
      if (m.g) {
        let i = 0;
        for await (const item of (fn as (...a: unknown[]) => AsyncIterable<unknown>)(...args)) {
          const enc = encodeResult(core, `${m.id}#${i}`, item);
          core.send({ t: "yield", id: m.id, i: i++, ...enc });
        }
        return { v: encodeValue(i) };
      }
      const result = await fn(...args);
      return encodeResult(core, m.id, result);
    });
  } catch (e) {
    if (e instanceof DependencyError) out = { v: e.wire };
    else out = { err: userError(e, m.fn.n) };
  }
  const done = { t: "done" as const, id: m.id, ms: performance.now() - start, ...out };
  if (m.replyTo) m.replyTo.send(done);
  else core.send(done);
}

async function initActor(core: Core, m: Extract<AgentToProc, { t: "actorInit" }>): Promise<any> {
  try {
    const cls = (await resolveFn(core, m.fn)) as new (...a: unknown[]) => any;
    const args = await decodeArgs(core, m.args);
    const instance = await core.taskContext.run({ actorId: m.actor, gpuIds: m.gpus ?? [] }, () => new cls(...args));
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
 * The actor's own socket: its creator sends calls here directly, so a call costs one hop each
 * way instead of two through the agent. The agent is told of each call by the caller.
 */
function listenDirect(sock: string, onCall: (c: DirectMsg) => void): void {
  try { fs.unlinkSync(sock); } catch { /* fresh */ }
  const server = net.createServer((socket) => {
    const writer = new FrameWriter(socket);
    const reader = new FrameReader(
      (msgs) => {
        for (const m of msgs as DirectMsg[]) {
          if (!m || typeof m.id !== "string") continue;
          const ok =
            (m.t === "actorCall" && typeof m.m === "string" && Array.isArray(m.args)) ||
            (m.t === "task" && typeof m.fn === "object" && Array.isArray(m.args)) ||
            m.t === "cancel";
          if (ok) onCall({ ...m, replyTo: writer } as DirectMsg);
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

async function runActorCall(
  core: Core,
  actor: ActorState,
  c: ActorCallMsg,
): Promise<void> {
  const start = performance.now();
  let out: { v?: Tagged; loc?: StoredLoc; err?: WireError };
  const desc = `${actor.name}.${c.m}`;
  try {
    const method = actor.instance[c.m];
    if (typeof method !== "function") throw new TypeError(`actor ${actor.name} has no method "${c.m}"`);
    const args = await decodeArgs(core, c.args);
    const result = await core.taskContext.run({ taskId: c.id, actorId: actor.id, gpuIds: actor.gpus }, () =>
      method.apply(actor.instance, args),
    );
    out = encodeResult(core, c.id, result);
  } catch (e) {
    if (e instanceof DependencyError) out = { v: e.wire };
    else out = { err: userError(e, desc) };
  }
  const done = { t: "done" as const, id: c.id, ms: performance.now() - start, ...out };
  if (c.replyTo) c.replyTo.send(done);
  else core.send(done);
}

