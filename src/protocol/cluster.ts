// Messages between agents (node ↔ head, node ↔ node) over WebSocket links. Validated on
// receipt like every other message: a malformed one is dropped with a log line.
import type { StoredLoc, Tagged } from "./values.js";
import type { ArgWire } from "./local.js";
import type { FnRef } from "../runtime/remote.js";
import type { WireError } from "../runtime/errors.js";

export interface NodeView {
  nodeId: string;
  name: string;
  nodeType: string;
  /** address other agents dial: ws://ip:port/peer */
  ip: string;
  port: number;
  /**
   * This agent's object socket (a Unix socket serving GET /object/<id> like the peer port) and
   * its host's identity: a peer with the same hostKey fetches large objects through it.
   */
  objSock?: string;
  hostKey?: string;
  isHead: boolean;
  alive: boolean;
  total: Record<string, number>;
  available: Record<string, number>;
  /** queued tasks, for spreading load */
  queued: number;
  lastSeen: number;
  gpus?: unknown[];
  store?: unknown;
  pending?: unknown[];
  workers?: number;
}

/** A task as it travels to the node that runs it; args carry values or remote locations. */
export interface RemoteTask {
  id: string;
  fn: FnRef;
  args: Array<ArgWire | { ref: string; v?: Tagged; loc?: StoredLoc }>;
  res: Record<string, number>;
  o: Record<string, unknown>;
  g: 0 | 1;
  job: string;
  /** node id of the owner: where results go */
  owner: string;
  p?: string;
}

export type ClusterMsg =
  | { t: "rep"; rid: number; value?: unknown; err?: string }
  | { t: "register"; rid?: number; node: NodeView; named?: Array<{ key: string; id: string; c: string }> }
  | { t: "hb"; nodeId: string; total?: Record<string, number>; available: Record<string, number>; queued: number; store?: unknown; pending?: unknown[]; workers?: number }
  | { t: "view"; nodes: NodeView[] }
  | { t: "exec"; task: RemoteTask }
  | { t: "result"; id: string; v?: Tagged; loc?: StoredLoc; err?: WireError; retryable?: boolean }
  | { t: "gyield"; id: string; i: number; v?: Tagged; loc?: StoredLoc }
  | { t: "sub"; ids: string[] }
  | { t: "ready"; items: Array<{ id: string; v?: Tagged; loc?: StoredLoc }> }
  | { t: "addref"; ids: string[] }
  | { t: "decref"; ids: string[] }
  | { t: "free"; ids: string[] }
  /** A node pulled a copy of an object into its store (sent to the object's owner). */
  | { t: "copied"; ids: string[] }
  | { t: "getBundle"; rid?: number; hash: string }
  | { t: "jobLog"; job: string; stream: "stdout" | "stderr"; line: string }
  | { t: "createActor"; actor: { id: string; fn: FnRef; args: RemoteTask["args"]; res: Record<string, number>; o: Record<string, unknown>; job: string; owner: string } }
  | { t: "actorState"; actor: string; state: string; node: string; cause?: string }
  | { t: "call"; id: string; actor: string; m: string; args: RemoteTask["args"]; caller: string }
  | { t: "kill"; actor: string; noRestart: boolean }
  /** Owner → node running a task of its: cancel it (`recursive`: and the tasks it submitted there). */
  | { t: "cancel"; id: string; force: boolean; recursive?: boolean }
  /**
   * Owner → node: a forced cancel of task `id`, which a process of the owner sent to `worker`,
   * leased to it (the lease's `secret` proves it); `recursive`: its subtasks first.
   */
  | { t: "cancelLeased"; id: string; worker: string; secret: string; recursive: boolean }
  | { t: "nameActor"; rid?: number; key: string; actor: string; node: string; className: string; getIfExists: boolean }
  | { t: "lookupName"; rid?: number; key: string }
  | { t: "dropName"; key: string; actor: string }
  | { t: "locateActor"; rid?: number; actor: string }
  | { t: "endJob"; job: string }
  /** Placement groups: a node's request to the head (create, wait, remove, list). */
  | { t: "pg"; rid?: number; op: string; id: string; bundles?: Record<string, number>[]; strategy?: string; name?: string; job?: string }
  /** Head → node: reserve a bundle (phase 1), make it usable (phase 2), give it back. */
  | { t: "pgPrepare"; rid?: number; id: string; i: number; res: Record<string, number> }
  | { t: "pgCommit"; rid?: number; id: string; i: number }
  | { t: "pgRelease"; rid?: number; id: string; i: number }
  /**
   * Owner → node: lease up to `n` idle workers to a process of the owner (direct SPREAD tasks),
   * started with exactly `env` (the tasks' environment; none: the plain pool).
   */
  | { t: "lease"; rid?: number; res: Record<string, number>; job: string; b?: string; n: number; owner: string; env?: Record<string, string> }
  /** Node → owner: a worker leased to one of its processes died (its tasks in flight are lost). */
  | { t: "leaseLost"; worker: string; kind: string; message: string }
  /** Owner → node: a lease is given back (or was granted too late, or to a process gone meanwhile). */
  | { t: "leaseEnd"; worker: string; secret: string }
  /** Owner → node: your store holds this object of ours (a leased worker wrote it); free it with ours. */
  | { t: "adopt"; id: string; loc: StoredLoc }
  /** A node agent stopping cleanly: the head need not wait for its silence. */
  | { t: "leave"; nodeId: string };

const isStr = (v: unknown): v is string => typeof v === "string";
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isObj = (v: unknown): v is Record<string, any> => typeof v === "object" && v !== null && !Array.isArray(v);
const isStrArr = (v: unknown) => Array.isArray(v) && v.every(isStr);
const isRes = (v: unknown) => isObj(v) && Object.values(v).every((x) => isNum(x) && x >= 0);
const isBundles = (v: unknown) => Array.isArray(v) && v.every(isRes);
const isEnv = (v: unknown) => v === undefined || (isObj(v) && Object.values(v).every(isStr));

const checks: Record<string, (m: Record<string, any>) => boolean> = {
  rep: (m) => isNum(m.rid),
  register: (m) => isObj(m.node) && isStr(m.node.nodeId) && isStr(m.node.ip) && isNum(m.node.port) && isObj(m.node.total),
  hb: (m) => isStr(m.nodeId) && isObj(m.available) && isNum(m.queued),
  view: (m) => Array.isArray(m.nodes),
  exec: (m) => isObj(m.task) && isStr(m.task.id) && isStr(m.task.owner) && Array.isArray(m.task.args) && isObj(m.task.fn),
  result: (m) => isStr(m.id),
  gyield: (m) => isStr(m.id) && isNum(m.i),
  sub: (m) => isStrArr(m.ids),
  ready: (m) => Array.isArray(m.items) && m.items.every((i: any) => isObj(i) && isStr(i.id)),
  addref: (m) => isStrArr(m.ids),
  decref: (m) => isStrArr(m.ids),
  free: (m) => isStrArr(m.ids),
  copied: (m) => isStrArr(m.ids),
  getBundle: (m) => isStr(m.hash) && isNum(m.rid),
  jobLog: (m) => isStr(m.job) && isStr(m.line),
  createActor: (m) => isObj(m.actor) && isStr(m.actor.id) && isStr(m.actor.owner),
  actorState: (m) => isStr(m.actor) && isStr(m.state) && isStr(m.node),
  call: (m) => isStr(m.id) && isStr(m.actor) && isStr(m.m) && Array.isArray(m.args) && isStr(m.caller),
  kill: (m) => isStr(m.actor),
  cancel: (m) => isStr(m.id),
  cancelLeased: (m) => isStr(m.id) && isStr(m.worker) && isStr(m.secret) && typeof m.recursive === "boolean",
  nameActor: (m) => isStr(m.key) && isStr(m.actor) && isStr(m.node) && isNum(m.rid),
  lookupName: (m) => isStr(m.key) && isNum(m.rid),
  dropName: (m) => isStr(m.key) && isStr(m.actor),
  locateActor: (m) => isStr(m.actor) && isNum(m.rid),
  endJob: (m) => isStr(m.job),
  leave: (m) => isStr(m.nodeId),
  lease: (m) => isNum(m.rid) && isRes(m.res) && isStr(m.job) && isNum(m.n) && isStr(m.owner) && (m.b === undefined || isStr(m.b)) && isEnv(m.env),
  leaseLost: (m) => isStr(m.worker) && isStr(m.kind) && isStr(m.message),
  leaseEnd: (m) => isStr(m.worker) && isStr(m.secret),
  adopt: (m) => isStr(m.id) && isObj(m.loc) && isStr(m.loc.path) && isStr(m.loc.node) && isNum(m.loc.size),
  pg: (m) => isNum(m.rid) && isStr(m.op) && isStr(m.id) && (m.bundles === undefined || isBundles(m.bundles)),
  pgPrepare: (m) => isNum(m.rid) && isStr(m.id) && isNum(m.i) && isRes(m.res),
  pgCommit: (m) => isNum(m.rid) && isStr(m.id) && isNum(m.i),
  pgRelease: (m) => isNum(m.rid) && isStr(m.id) && isNum(m.i),
};

export function validateClusterMessage(m: unknown): string | undefined {
  if (!isObj(m) || !isStr(m.t)) return "message is not an object with a string `t`";
  const c = checks[m.t];
  if (!c) return `unknown message type "${m.t}"`;
  return c(m) ? undefined : `malformed "${m.t}" message`;
}
