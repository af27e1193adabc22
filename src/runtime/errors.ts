// Errors that cross process boundaries keep a stable `name`, so `err.name === "TaskError"`
// and `instanceof` both work in the driver whatever process raised them.

export class TrayError extends Error {
  override name = "TrayError";
}

/** The user's exception in a task or actor method, with the remote stack. */
export class TaskError extends TrayError {
  override name = "TaskError";
  /** `name` of the original exception (e.g. "RangeError"). */
  readonly causeName: string;
  readonly remoteStack: string;
  constructor(message: string, opts: { causeName: string; remoteStack: string; cause?: unknown; taskDesc?: string }) {
    super(message, { cause: opts.cause });
    this.causeName = opts.causeName;
    this.remoteStack = opts.remoteStack;
    // The stack a user sees is the remote one: where their code threw.
    this.stack = `TaskError: ${opts.taskDesc ? opts.taskDesc + " failed: " : ""}${opts.remoteStack || `${opts.causeName}: ${message}`}`;
  }
}

export class WorkerCrashedError extends TrayError { override name = "WorkerCrashedError"; }
export class ActorDiedError extends TrayError { override name = "ActorDiedError"; }
export class ObjectLostError extends TrayError { override name = "ObjectLostError"; }
export class GetTimeoutError extends TrayError { override name = "GetTimeoutError"; }
export class TaskCancelledError extends TrayError { override name = "TaskCancelledError"; }
export class NodeDiedError extends TrayError { override name = "NodeDiedError"; }
export class OutOfMemoryError extends TrayError { override name = "OutOfMemoryError"; }
/** A task or actor whose resources no node of the cluster could ever provide. */
export class InfeasibleTaskError extends TrayError { override name = "InfeasibleTaskError"; }
export class RuntimeEnvError extends TrayError { override name = "RuntimeEnvError"; }

const systemErrors: Record<string, new (m: string) => TrayError> = {
  WorkerCrashedError,
  ActorDiedError,
  ObjectLostError,
  GetTimeoutError,
  TaskCancelledError,
  NodeDiedError,
  OutOfMemoryError,
  InfeasibleTaskError,
  RuntimeEnvError,
};

/** Wire form of an error: what every process can rebuild. */
export interface WireError {
  /** "TaskError" for user exceptions, else one of the system error names. */
  kind: string;
  message: string;
  /** Original exception's name for TaskError. */
  causeName?: string;
  stack?: string;
  /** Name of the task/method that failed, for messages. */
  task?: string;
}

export function toWireError(e: unknown, task?: string): WireError {
  if (e instanceof Error) {
    if (e.name in systemErrors) return { kind: e.name, message: e.message, task };
    if (e instanceof TaskError) return { kind: "TaskError", message: e.message, causeName: e.causeName, stack: e.remoteStack, task };
    return { kind: "TaskError", message: e.message, causeName: e.name, stack: e.stack ?? "", task };
  }
  return { kind: "TaskError", message: String(e), causeName: typeof e, stack: "", task };
}

export function fromWireError(w: WireError): Error {
  const Sys = systemErrors[w.kind];
  if (Sys) return new Sys(w.message);
  const cause = new Error(w.message);
  cause.name = w.causeName ?? "Error";
  if (w.stack) cause.stack = w.stack;
  return new TaskError(w.message, { causeName: w.causeName ?? "Error", remoteStack: w.stack ?? "", cause, taskDesc: w.task });
}
