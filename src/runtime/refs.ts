// ObjectRef, ActorHandle and ObjectRefGenerator: the handles user code holds.
import { apiCore, getCore, hasCore } from "./context.js";
import type { RemoteOptions } from "./options.js";

/** A reference to a value that exists, or will exist, somewhere in the cluster. */
export class ObjectRef<T = unknown> {
  declare readonly __type?: T;
  /** @internal */
  constructor(readonly id: string) {}

  /** @internal a ref received from elsewhere (deserialized): counted as a new holder. */
  static fromId<T>(id: string): ObjectRef<T> {
    const ref = new ObjectRef<T>(id);
    if (hasCore()) getCore().trackRef(ref, false);
    return ref;
  }

  toString(): string {
    return `ObjectRef(${this.id})`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/** Streaming results of a generator task: refs arrive while the task still runs. */
export class ObjectRefGenerator<T = unknown> implements AsyncIterable<ObjectRef<T>> {
  /** @internal */
  constructor(readonly taskId: string, private readonly completion: ObjectRef<number>) {}

  /** Resolves with the number of items once the task is done (rejects with its error). */
  completed(): ObjectRef<number> {
    return this.completion;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ObjectRef<T>> {
    const core = getCore();
    for (let i = 0; ; i++) {
      const ref = await core.nextGeneratorItem<T>(this.taskId, i, this.completion);
      if (!ref) return;
      yield ref;
    }
  }
}

export interface ActorMethod<A extends unknown[], R> {
  remote(...args: A): ObjectRef<Awaited<R>>;
  options(o: Pick<RemoteOptions, "name">): ActorMethod<A, R>;
}

export type ActorHandleOf<C> = {
  [K in keyof C as C[K] extends (...a: any[]) => any ? K : never]: C[K] extends (...a: infer A) => infer R
    ? ActorMethod<A, R>
    : never;
} & ActorHandle<C>;

/** A handle to an actor: `handle.method.remote(...args)` returns an ObjectRef. */
export class ActorHandle<C = unknown> {
  declare readonly __class?: C;
  /** @internal */
  constructor(
    readonly _actorId: string,
    readonly _className: string,
  ) {
    return new Proxy(this, {
      get(target, prop, receiver) {
        if (typeof prop !== "string" || prop in target || prop === "then") return Reflect.get(target, prop, receiver);
        return methodStub(target, prop);
      },
    });
  }

  /** @internal */
  _toWire(): { id: string; c: string } {
    return { id: this._actorId, c: this._className };
  }

  /** @internal */
  static _fromWire(w: { id: string; c: string }): ActorHandle<any> {
    return new ActorHandle(w.id, w.c);
  }

  toString(): string {
    return `ActorHandle(${this._className}, ${this._actorId})`;
  }
}

function methodStub(h: ActorHandle<any>, method: string): ActorMethod<any[], any> {
  return {
    remote: (...args: unknown[]) => apiCore(".remote() of actor method ", method).callActor(h._actorId, method, args),
    options: () => methodStub(h, method),
  };
}
