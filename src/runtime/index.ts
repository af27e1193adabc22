// The `tray` package as jobs see it: import { remote, get, put, wait } from "tray".
import { apiCore, getCore } from "./context.js";
import { ActorHandle as Handle, type ObjectRef, type ActorHandle, type ActorHandleOf } from "./refs.js";
import type { RuntimeContext } from "./core.js";

export { remote } from "./remote.js";
export type { RemoteFunction, RemoteGenerator, ActorClass } from "./remote.js";
export { ObjectRef, ObjectRefGenerator, ActorHandle } from "./refs.js";
export type { ActorHandleOf, ActorMethod } from "./refs.js";
export type { RemoteOptions, SchedulingStrategy } from "./options.js";
export type { RuntimeContext } from "./core.js";
export { placementGroup, removePlacementGroup, PlacementGroup } from "./placement-group.js";
export type { PlacementStrategy } from "./placement-group.js";
export {
  TrayError,
  TaskError,
  WorkerCrashedError,
  ActorDiedError,
  ObjectLostError,
  GetTimeoutError,
  TaskCancelledError,
  NodeDiedError,
  OutOfMemoryError,
  InfeasibleTaskError,
  RuntimeEnvError,
} from "./errors.js";

/** The value(s) of one ref or an array of refs; rejects with the task's error. */
export function get<T>(ref: ObjectRef<T>, opts?: { timeoutMs?: number }): Promise<T>;
export function get<T extends readonly ObjectRef<any>[]>(
  refs: T,
  opts?: { timeoutMs?: number },
): Promise<{ [K in keyof T]: T[K] extends ObjectRef<infer V> ? V : never }>;
export function get<T>(refs: ObjectRef<T>[], opts?: { timeoutMs?: number }): Promise<T[]>;
export function get(refs: any, opts?: { timeoutMs?: number }): Promise<any> {
  return apiCore("get()").get(refs, opts);
}

/** Store a value in the cluster; returns its ref synchronously. */
export function put<T>(value: T): ObjectRef<T> {
  return apiCore("put()").put(value);
}

/** Resolves with [ready, notReady] once `numReturns` refs are ready or the timeout passes. */
export function wait<T>(
  refs: ObjectRef<T>[],
  opts?: { numReturns?: number; timeoutMs?: number },
): Promise<[ObjectRef<T>[], ObjectRef<T>[]]> {
  return apiCore("wait()").wait(refs, opts) as Promise<[ObjectRef<T>[], ObjectRef<T>[]]>;
}

/** Cancel a pending or running task. `force` kills the worker running it. */
export function cancel(ref: ObjectRef<any>, opts: { force?: boolean; recursive?: boolean } = {}): void {
  getCore().cancel(ref.id, !!opts.force, opts.recursive ?? true);
}

/** Terminate an actor; by default it is not restarted. */
export function kill(actor: ActorHandle<any>, opts: { noRestart?: boolean } = {}): void {
  getCore().killActor(actor._actorId, opts.noRestart ?? true);
}

/** The handle of a named actor. */
export async function getActor<C = any>(name: string, opts: { namespace?: string } = {}): Promise<ActorHandleOf<C>> {
  const core = getCore();
  const w = await core.request<{ id: string; c: string }>({ t: "getActor", name, namespace: opts.namespace ?? core.namespace });
  return Handle._fromWire(w) as ActorHandleOf<C>;
}

export function getRuntimeContext(): RuntimeContext {
  return getCore().context();
}

export interface NodeInfo {
  nodeId: string;
  name: string;
  nodeType: string;
  address: string;
  alive: boolean;
  isHead: boolean;
  resources: Record<string, number>;
  available: Record<string, number>;
}

export function nodes(): Promise<NodeInfo[]> {
  return getCore().request({ t: "cluster", what: "nodes" });
}

export function clusterResources(): Promise<Record<string, number>> {
  return getCore().request({ t: "cluster", what: "total" });
}

export function availableResources(): Promise<Record<string, number>> {
  return getCore().request({ t: "cluster", what: "available" });
}
