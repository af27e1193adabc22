// Messages between a driver/worker process and its node agent (Unix socket, framed msgpack).
// Every message has a string `t`; `validateProcMessage` checks each one the agent receives,
// so a malformed message is answered with an error and dropped, never crashes the agent.
import type { StoredLoc, Tagged } from "./values.js";
import type { FnRef } from "../runtime/remote.js";
import type { WireError } from "../runtime/errors.js";

/**
 * A task argument: an inline value, a primitive carried as itself (`p`: a number, string,
 * boolean or null, which the frame's msgpack round-trips exactly — no second encoding), or a
 * ref (resolved before the task runs).
 */
export type ArgWire = { v: Tagged } | { p: Primitive } | { ref: string };
/** A ref argument as a worker receives it: with its value or location, ready to use. */
export type ResolvedArg = { v: Tagged } | { p: Primitive } | { ref: string; v?: Tagged; loc?: StoredLoc };
export type Primitive = number | string | boolean | null;

/** Longest string sent as a primitive (longer ones are encoded values, stored when large). */
const PRIMITIVE_MAX_CHARS = 1024;

/** Whether a value travels as a wire primitive (exactly, in one msgpack encoding). */
export function isPrimitive(x: unknown): x is Primitive {
  switch (typeof x) {
    case "number":
      return !Object.is(x, -0); // msgpack integers have no -0
    case "boolean":
      return true;
    case "string":
      return x.length <= PRIMITIVE_MAX_CHARS;
    default:
      return x === null;
  }
}

export type ProcToAgent =
  | { t: "hello"; role: "worker" | "driver"; pid: number; workerId?: string; job?: string }
  | { t: "submit"; id: string; fn: FnRef; args: ArgWire[]; res: Record<string, number>; o: Record<string, unknown>; g: 0 | 1; p?: string }
  | { t: "createActor"; id: string; fn: FnRef; args: ArgWire[]; res: Record<string, number>; o: Record<string, unknown> }
  | { t: "call"; id: string; actor: string; m: string; args: ArgWire[] }
  | { t: "put"; id: string; v: Tagged }
  | { t: "seal"; id: string; loc: StoredLoc }
  | { t: "sub"; ids: string[] }
  | { t: "unsub"; ids: string[] }
  | { t: "addref"; ids: string[] }
  | { t: "decref"; ids: string[] }
  | { t: "done"; id: string; v?: Tagged; loc?: StoredLoc; err?: WireError; ms: number; retryable?: boolean }
  | { t: "yield"; id: string; i: number; v?: Tagged; loc?: StoredLoc }
  | { t: "blocked"; returned: string[] }
  | { t: "unblocked" }
  | { t: "actorReady"; actor: string; err?: WireError }
  /**
   * cancel(): with `worker`, a forced cancel of a task this process sent to that leased worker
   * (of this node, or of another node through its agent); without, a task the agent knows, or
   * (recursive) the tasks it knows whose parent is `id`.
   */
  | { t: "cancel"; id: string; force: boolean; recursive: boolean; worker?: string }
  /**
   * A worker's answer to a forced recursive cancel (`cancel` with `f`): `kill` when it was
   * running the task (the tasks it submitted for it are cancelled: it may die now), false when
   * not (dropped from its queue, or finished already: it lives on).
   */
  | { t: "cancelAck"; id: string; kill: boolean }
  /**
   * Lease a local worker for tasks of this shape, to send them to it directly; `env`: the
   * tasks' environment (the job's, plus their runtimeEnv), so only a worker started with
   * exactly that environment is leased.
   */
  | { t: "lease"; rid: number; res: Record<string, number>; env?: Record<string, string> }
  | { t: "leaseReturn"; worker: string }
  /**
   * Lease workers on every node that can run this shape (this one and others), up to `n` per
   * node, for SPREAD tasks this process then sends to them directly. Answered with grants.
   */
  | { t: "leaseSpread"; rid: number; res: Record<string, number>; b?: string; n: number; env?: Record<string, string> }
  /** A directly-run task whose large result stayed on another node: how to rebuild it. */
  | { t: "directLineage"; id: string; fn: FnRef; args: ArgWire[]; res: Record<string, number>; o: Record<string, unknown> }
  | { t: "kill"; actor: string; noRestart: boolean }
  | { t: "getActor"; rid: number; name: string; namespace: string }
  | { t: "cluster"; rid: number; what: "nodes" | "total" | "available" }
  | { t: "jobDone"; ok: boolean; err?: WireError; result?: string }
  /** Placement groups (kept by the head): create, wait (until placed), remove, list. */
  | { t: "pg"; rid: number; op: "create" | "wait" | "remove" | "list"; id: string; bundles?: Record<string, number>[]; strategy?: string; name?: string }
  /** A call this process sent straight to an actor on this node (the result will follow). */
  | { t: "direct"; id: string; actor: string }
  /** The result of such a call: the object the agent tracks becomes ready. */
  | { t: "directDone"; id: string; v?: Tagged; loc?: StoredLoc; err?: WireError };

/**
 * A worker leased to a submitter: on its node (`sock`, its Unix socket) or on another node
 * (`addr` of that node's peer server, where `/direct/<worker>` with the cluster token and the
 * lease's `secret` is piped to the worker's socket).
 */
export interface LeaseGrant {
  worker: string;
  node: string;
  sock?: string;
  addr?: string;
  token?: string;
  secret?: string;
}

export type AgentToProc =
  | { t: "ready"; items: Array<{ id: string; v?: Tagged; loc?: StoredLoc; ms?: number }> }
  | { t: "rep"; rid: number; value?: unknown; err?: WireError }
  | { t: "gc" }
  | { t: "task"; id: string; fn: FnRef; args: ResolvedArg[]; g: 0 | 1; gpus?: number[]; env?: Record<string, string>; job: string; ns?: string }
  | { t: "actorInit"; actor: string; fn: FnRef; args: ResolvedArg[]; gpus?: number[]; maxConcurrency: number; job: string; ns?: string; sock?: string }
  | { t: "actorCall"; id: string; m: string; args: ResolvedArg[] }
  /**
   * Cancel a task sent to this worker: dropped if still queued; if running and `r`
   * (recursive), the tasks it submitted are cancelled too (`f`: with force; then answer
   * `cancelAck`, and the agent kills the worker).
   */
  | { t: "cancel"; id: string; r?: 1; f?: 1 }
  /** A worker leased to you died: its tasks in flight must be retried or failed. */
  | { t: "leaseLost"; worker: string; kind: string; message: string }
  /** The actor you created listens here: call it directly (one hop each way). */
  | { t: "actorDirect"; actor: string; sock: string };

// ------------------------------------------------------------------ validation

const isStr = (v: unknown): v is string => typeof v === "string";
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isStrArr = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);
const isBytes = (v: unknown): boolean => v instanceof Uint8Array;

function isTagged(v: unknown): boolean {
  return isObj(v) && isNum(v.e) && (v.d === undefined || isBytes(v.d));
}
function isLoc(v: unknown): boolean {
  return isObj(v) && isNum(v.e) && isNum(v.size) && isStr(v.path) && isStr(v.node);
}
function isFnRef(v: unknown): boolean {
  return isObj(v) && isStr(v.n) && ((isStr(v.b) && isNum(v.i)) || isStr(v.s));
}
function isArgs(v: unknown): boolean {
  return Array.isArray(v) && v.every((a) => isObj(a) && (isStr(a.ref) || isTagged(a.v) || ("p" in a && isPrimitive(a.p))));
}
function isRes(v: unknown): boolean {
  return isObj(v) && Object.values(v).every((x) => isNum(x) && x >= 0);
}
/** An environment (absent, or names to strings). */
function isEnv(v: unknown): boolean {
  return v === undefined || (isObj(v) && Object.values(v).every(isStr));
}

const checks: Record<string, (m: Record<string, any>) => boolean> = {
  hello: (m) => (m.role === "worker" || m.role === "driver") && isNum(m.pid),
  submit: (m) => isStr(m.id) && isFnRef(m.fn) && isArgs(m.args) && isRes(m.res) && isObj(m.o),
  createActor: (m) => isStr(m.id) && isFnRef(m.fn) && isArgs(m.args) && isRes(m.res) && isObj(m.o),
  call: (m) => isStr(m.id) && isStr(m.actor) && isStr(m.m) && isArgs(m.args),
  put: (m) => isStr(m.id) && isTagged(m.v) && isBytes(m.v.d),
  seal: (m) => isStr(m.id) && isLoc(m.loc),
  sub: (m) => isStrArr(m.ids),
  unsub: (m) => isStrArr(m.ids),
  addref: (m) => isStrArr(m.ids),
  decref: (m) => isStrArr(m.ids),
  done: (m) => isStr(m.id) && isNum(m.ms) && (m.v === undefined || isTagged(m.v)) && (m.loc === undefined || isLoc(m.loc)),
  yield: (m) => isStr(m.id) && isNum(m.i) && (isTagged(m.v) || isLoc(m.loc)),
  blocked: (m) => isStrArr(m.returned),
  unblocked: () => true,
  actorReady: (m) => isStr(m.actor),
  cancel: (m) => isStr(m.id),
  cancelAck: (m) => isStr(m.id) && typeof m.kill === "boolean",
  kill: (m) => isStr(m.actor),
  getActor: (m) => isNum(m.rid) && isStr(m.name) && isStr(m.namespace),
  cluster: (m) => isNum(m.rid) && (m.what === "nodes" || m.what === "total" || m.what === "available"),
  jobDone: (m) => typeof m.ok === "boolean",
  pg: (m) =>
    isNum(m.rid) && ["create", "wait", "remove", "list"].includes(m.op) && isStr(m.id) &&
    (m.bundles === undefined || (Array.isArray(m.bundles) && m.bundles.every(isRes))) &&
    (m.strategy === undefined || isStr(m.strategy)) && (m.name === undefined || isStr(m.name)),
  direct: (m) => isStr(m.id) && isStr(m.actor),
  lease: (m) => isNum(m.rid) && isRes(m.res) && isEnv(m.env),
  leaseReturn: (m) => isStr(m.worker),
  leaseSpread: (m) => isNum(m.rid) && isRes(m.res) && isNum(m.n) && m.n >= 1 && (m.b === undefined || isStr(m.b)) && isEnv(m.env),
  directLineage: (m) => isStr(m.id) && isFnRef(m.fn) && isArgs(m.args) && isRes(m.res) && isObj(m.o),
  directDone: (m) => isStr(m.id) && (m.v === undefined || isTagged(m.v)) && (m.loc === undefined || isLoc(m.loc)),
};

/** Returns an error sentence for a malformed message, or undefined when it is fine. */
export function validateProcMessage(m: unknown): string | undefined {
  if (!isObj(m) || !isStr(m.t)) return "message is not an object with a string `t`";
  const check = checks[m.t];
  if (!check) return `unknown message type "${m.t}"`;
  return check(m) ? undefined : `malformed "${m.t}" message`;
}
