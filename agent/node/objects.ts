// The object directory of one agent: every object owned by processes on this node, its
// state, value or location, reference count and subscribers. Freed when the count of
// holders (processes, pending tasks that take it as an argument, objects that contain it)
// drops to zero.
import type { StoredLoc, Tagged } from "../../src/protocol/values.js";

export interface ObjEntry {
  id: string;
  /** 0 pending, 1 ready */
  s: 0 | 1;
  v?: Tagged;
  loc?: StoredLoc;
  count: number;
  /** Connections that asked to be told when it is ready. */
  subs?: Set<{ notify(id: string, e: ObjEntry): void }>;
  /** Owned by another node; this entry stands for our borrowed reference and local copy. */
  borrowed?: boolean;
  /** Lineage: how to make it again (a task result whose only copy was on a node that died). */
  lineage?: unknown;
  /** Callbacks waiting for readiness (task dependencies). */
  waiters?: Array<(e: ObjEntry) => void>;
  /**
   * How long (ms) the task that made it ran on its worker, told to its owner with the value:
   * a submitter learns which functions are tiny from the tasks that went through the agent
   * too, not only from those on its leased workers (see DirectTasks.learn).
   */
  ms?: number;
}

export class ObjectDirectory {
  readonly entries = new Map<string, ObjEntry>();
  onFree?: (e: ObjEntry) => void;

  get(id: string): ObjEntry | undefined {
    return this.entries.get(id);
  }

  /** A new object (pending or ready) held once by its creator. */
  create(id: string, count = 1): ObjEntry {
    let e = this.entries.get(id);
    if (e) {
      e.count += count;
      return e;
    }
    e = { id, s: 0, count };
    this.entries.set(id, e);
    return e;
  }

  /**
   * Mark ready and tell everyone waiting (`ms`: the run time of the task that made it, told
   * with it). Nested refs of the value are held by it.
   */
  resolve(id: string, v: Tagged | undefined, loc: StoredLoc | undefined, ms?: number): ObjEntry | undefined {
    const e = this.entries.get(id);
    if (!e || e.s === 1) return e;
    e.s = 1;
    if (v) e.v = v;
    if (loc) e.loc = loc;
    if (ms !== undefined) e.ms = ms;
    const nested = v?.r ?? loc?.r;
    if (nested) for (const n of nested) this.incr(n);
    if (e.subs) {
      for (const s of e.subs) s.notify(id, e);
      e.subs = undefined;
    }
    if (e.waiters) {
      const ws = e.waiters;
      e.waiters = undefined;
      for (const w of ws) w(e);
    }
    if (e.count <= 0) this.free(e);
    return e;
  }

  incr(id: string): void {
    const e = this.entries.get(id) ?? this.onMissing?.(id);
    if (e) e.count++;
  }

  /** An id held here that this node does not know: the agent borrows it from its owner. */
  onMissing?: (id: string) => ObjEntry | undefined;

  decr(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    if (--e.count <= 0 && e.s === 1 && !e.subs && !e.waiters) this.free(e);
  }

  private free(e: ObjEntry): void {
    this.entries.delete(e.id);
    this.onFree?.(e);
    const nested = e.v?.r ?? e.loc?.r;
    if (nested) for (const n of nested) this.decr(n);
  }
}
