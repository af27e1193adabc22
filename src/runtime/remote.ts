// remote(): functions become tasks, classes become actors. Each call at module top level is
// numbered in load order; every process that imports the same job bundle numbers them the
// same way, so (bundle hash, index) names a function on every node without shipping code.
import { apiCore, bundleImport, setBundleImport } from "./context.js";
import { ObjectRef, ObjectRefGenerator, type ActorHandleOf } from "./refs.js";
import { validateOptions, type RemoteOptions } from "./options.js";

/** How a task names its function on the wire. */
export interface FnRef {
  /** bundle hash the function was defined in (absent for functions defined at run time) */
  b?: string;
  /** index of the remote() call in that bundle */
  i?: number;
  /** source text, for functions defined after the bundle loaded (must not close over locals) */
  s?: string;
  /** name, for messages */
  n: string;
}

type Arg<T> = T | ObjectRef<T>;
type Args<A extends unknown[]> = { [K in keyof A]: Arg<A[K]> };

export interface RemoteFunction<A extends unknown[], R> {
  remote(...args: Args<A>): ObjectRef<Awaited<R>>;
  options(o: RemoteOptions): RemoteFunction<A, R>;
  readonly _fn: FnRef;
}

export interface RemoteGenerator<A extends unknown[], T> {
  remote(...args: Args<A>): ObjectRefGenerator<T>;
  options(o: RemoteOptions): RemoteGenerator<A, T>;
  readonly _fn: FnRef;
}

export interface ActorClass<C extends new (...a: any[]) => any> {
  remote(...args: Args<ConstructorParameters<C>>): ActorHandleOf<InstanceType<C>>;
  options(o: RemoteOptions): ActorClass<C>;
  readonly _fn: FnRef;
}

/** Registry of this process: bundle hash -> functions/classes in remote() order. */
const byBundle = new Map<string, Function[]>();
let loadingIndex = 0;

/** @internal the worker/driver calls this around importing a bundle. */
export function beginBundleLoad(hash: string): void {
  loadingIndex = 0;
  byBundle.set(hash, []);
  setBundleImport(hash);
}

/** @internal */
export function endBundleLoad(): void {
  setBundleImport(undefined);
}

/** @internal */
export function lookupFunction(ref: FnRef): Function {
  if (ref.b !== undefined && ref.i !== undefined) {
    const fns = byBundle.get(ref.b);
    if (!fns) throw new Error(`job bundle ${ref.b} is not loaded in this worker`);
    const f = fns[ref.i];
    if (!f) {
      throw new Error(
        `function #${ref.i} (${ref.n}) is unknown in this worker: remote() must be called at module top level, the same way in every process`,
      );
    }
    return f;
  }
  if (ref.s !== undefined) return compileSource(ref.s, ref.n);
  throw new Error(`malformed function reference for ${ref.n}`);
}

const compiled = new Map<string, Function>();
function compileSource(src: string, name: string): Function {
  let f = compiled.get(src);
  if (!f) {
    try {
      f = new Function(`return (${src});`)() as Function;
    } catch (e) {
      throw new Error(
        `${name} was passed to remote() at run time and its source cannot be rebuilt in a worker (${(e as Error).message}); call remote() at module top level instead`,
      );
    }
    compiled.set(src, f);
  }
  return f;
}

function isClass(f: Function): boolean {
  return /^class[\s{]/.test(Function.prototype.toString.call(f));
}

export function isGeneratorFunction(f: Function): boolean {
  const n = f.constructor?.name;
  return n === "AsyncGeneratorFunction" || n === "GeneratorFunction";
}

/**
 * Where remote() was called, as file:line of the user's code (source-mapped in workers and
 * drivers): the name of an anonymous function in messages, e.g. `remote((x) => x * x)`.
 */
function callSite(): string | undefined {
  const self = typeof process !== "undefined" ? process.argv[1] : undefined;
  const lines = (new Error().stack ?? "").split("\n").slice(1);
  for (const l of lines) {
    if ((self && l.includes(self)) || /node:|\/runtime\/remote\.|runtime\.js/.test(l)) continue;
    const m = /([^/\\( ]+:\d+):\d+\)?\s*$/.exec(l);
    if (m) return m[1];
  }
  return undefined;
}

function register(f: Function): FnRef {
  let n = f.name;
  if (!n) {
    const site = callSite();
    n = site ? `anonymous function at ${site}` : "anonymous";
  }
  const loading = bundleImport();
  if (loading !== undefined) {
    const i = loadingIndex++;
    byBundle.get(loading)!.push(f);
    return { b: loading, i, n };
  }
  return { s: Function.prototype.toString.call(f), n };
}

export function remote<A extends unknown[], T>(
  fn: (...args: A) => AsyncGenerator<T, any, any> | Generator<T, any, any>,
  options?: RemoteOptions,
): RemoteGenerator<A, T>;
export function remote<C extends new (...args: any[]) => any>(cls: C, options?: RemoteOptions): ActorClass<C>;
export function remote<A extends unknown[], R>(fn: (...args: A) => R, options?: RemoteOptions): RemoteFunction<A, R>;
export function remote(f: any, options?: RemoteOptions): any {
  if (typeof f !== "function") throw new TypeError("remote() takes a function or a class");
  const ref = register(f);
  if (isClass(f)) return makeActorClass(ref, validateOptions(options, "actor"));
  if (isGeneratorFunction(f)) return makeGenerator(ref, validateOptions(options, "task"));
  return makeFunction(ref, validateOptions(options, "task"));
}

function makeFunction(fn: FnRef, opts: RemoteOptions): RemoteFunction<any, any> {
  return {
    _fn: fn,
    remote: (...args: unknown[]) => apiCore(".remote() of ", fn.n).submitTask(fn, args, opts, false) as ObjectRef<any>,
    options: (o: RemoteOptions) => makeFunction(fn, { ...opts, ...validateOptions(o, "task") }),
  };
}

function makeGenerator(fn: FnRef, opts: RemoteOptions): RemoteGenerator<any, any> {
  return {
    _fn: fn,
    remote: (...args: unknown[]) => {
      const done = apiCore(".remote() of ", fn.n).submitTask(fn, args, opts, true) as ObjectRef<number>;
      return new ObjectRefGenerator(done.id, done);
    },
    options: (o: RemoteOptions) => makeGenerator(fn, { ...opts, ...validateOptions(o, "task") }),
  };
}

function makeActorClass(fn: FnRef, opts: RemoteOptions): ActorClass<any> {
  return {
    _fn: fn,
    remote: (...args: unknown[]) => apiCore(".remote() of ", fn.n).createActor(fn, args, opts) as any,
    options: (o: RemoteOptions) => makeActorClass(fn, { ...opts, ...validateOptions(o, "actor") }),
  };
}
