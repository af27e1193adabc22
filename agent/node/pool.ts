// Worker processes of one node: pre-started so the first task does not wait for a Node
// start-up, then kept per job (a job's top-level state never leaks into another job), and
// replaced when one dies.
import { spawn, type ChildProcess } from "node:child_process";
import os from "node:os";
import path from "node:path";
import type { Resources } from "./resources.js";

export interface Lease {
  cls: string;
  res: Resources;
  gpus: number[];
  /** Tasks sent to the worker, oldest (running) first. */
  tasks: string[];
}

export interface WorkerProc {
  id: string;
  /** Unix socket of the worker for direct tasks from the process that leased it. */
  sock: string;
  /** The connection that leased this worker for direct tasks (state "direct"). */
  directOwner?: unknown;
  /** Leased to a process on another node (state "direct"): reached through our peer server. */
  remoteLease?: { owner: string; secret: string; socket?: import("node:net").Socket; timer?: NodeJS.Timeout };
  /**
   * Forced recursive cancels of tasks it runs, waiting for its `cancelAck` (it cancels the
   * tasks it submitted first); the timer kills it if it never answers (its event loop busy).
   */
  cancelKills?: Map<string, NodeJS.Timeout>;
  proc: ChildProcess;
  pid: number;
  /** Job it belongs to ("" = not yet assigned). */
  job: string;
  /**
   * Environment signature: the environment its tasks asked for (the job's `--env` plus a
   * runtimeEnv; see envKeyOf) + GPU ids it was started with; "" for the plain pool. Tasks on
   * the agent's path and leases for the direct paths both pick workers by it.
   */
  envKey: string;
  state: "starting" | "idle" | "leased" | "direct" | "actor" | "dead";
  conn?: unknown;
  lease?: Lease;
  actorId?: string;
  blocked: boolean;
  /** Last lines of stderr, to explain a crash. */
  stderrTail: string[];
  idleSince: number;
  onReady: Array<() => void>;
}

export interface SpawnSpec {
  agentScript: string;
  env: NodeJS.ProcessEnv;
  onLine: (w: WorkerProc, stream: "stdout" | "stderr", line: string) => void;
  onExit: (w: WorkerProc, code: number | null, signal: string | null) => void;
}

/** The pool key of a task's environment (`o.env`): "" for none. */
export function envKeyOf(env: Record<string, string> | undefined): string {
  return env ? JSON.stringify(env) : "";
}

let counter = 0;

/** V8 heap limit of a worker; TRAY_WORKER_MAX_OLD_SPACE_MB lowers it (tests of out-of-memory). */
function maxOldSpaceMb(): number {
  const v = Number(process.env.TRAY_WORKER_MAX_OLD_SPACE_MB);
  return Number.isInteger(v) && v > 0 ? v : 4096;
}

export function spawnWorker(nodeId: string, job: string, envKey: string, extraEnv: Record<string, string>, spec: SpawnSpec): WorkerProc {
  const id = `${nodeId}w${(++counter).toString(36)}`;
  // Where a submitter that leases this worker sends its tasks directly (see agent "lease").
  const sock = path.join(os.tmpdir(), `tray-w-${process.pid}-${id}.sock`);
  const proc = spawn(process.execPath, ["--expose-gc", `--max-old-space-size=${maxOldSpaceMb()}`, spec.agentScript, "worker"], {
    // A worker sees exactly the GPUs it was given: none unless extraEnv names them (the
    // agent's own CUDA_VISIBLE_DEVICES, if any, only limits what the agent hands out).
    env: { ...spec.env, CUDA_VISIBLE_DEVICES: "", ...extraEnv, TRAY_WORKER_ID: id, TRAY_JOB_ID: job, TRAY_WORKER_SOCK: sock },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const w: WorkerProc = {
    id,
    sock,
    proc,
    pid: proc.pid ?? -1,
    job,
    envKey,
    state: "starting",
    blocked: false,
    stderrTail: [],
    idleSince: Date.now(),
    onReady: [],
  };
  pipeLines(proc.stdout!, (l) => spec.onLine(w, "stdout", l));
  pipeLines(proc.stderr!, (l) => {
    w.stderrTail.push(l);
    if (w.stderrTail.length > 20) w.stderrTail.shift();
    spec.onLine(w, "stderr", l);
  });
  // Report the exit once stderr is drained (its last lines explain a crash: "heap out of
  // memory"...), but not later than 300 ms after the exit, in case a grandchild holds the pipe.
  let reported = false;
  const report = (code: number | null, signal: string | null) => {
    if (reported) return;
    reported = true;
    spec.onExit(w, code, signal);
  };
  proc.on("exit", (code, signal) => setTimeout(() => report(code, signal), 300).unref());
  proc.on("close", (code, signal) => report(code, signal));
  proc.on("error", () => {});
  return w;
}

export function pipeLines(stream: NodeJS.ReadableStream, onLine: (l: string) => void): void {
  let rest = "";
  stream.setEncoding?.("utf8");
  stream.on("data", (chunk: string) => {
    const text = rest + chunk;
    const lines = text.split("\n");
    rest = lines.pop()!;
    for (const l of lines) onLine(l);
  });
  stream.on("end", () => {
    if (rest) onLine(rest);
    rest = "";
  });
}
