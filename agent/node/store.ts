// The node's store for large objects: one file per object under /dev/shm (every local
// worker reads it without a network hop), spilled to disk when the store's capacity is
// reached and restored on access when room comes back.
import fs from "node:fs";
import path from "node:path";
import type { StoredLoc } from "../../src/protocol/values.js";
import { FREE_DIR, RECYCLE_MIN_BYTES } from "../../src/runtime/recycle.js";

/** Objects from this size up make the store prepare warm memory for the next one. */
const PREFAULT_MIN_BYTES = 8 * 1024 * 1024;

export class ObjectStore {
  used = 0;
  spilledBytes = 0;
  spillCount = 0;
  restoreCount = 0;
  /** Objects in shared memory, least recently used first (Map keeps insertion order). */
  private readonly inMemory = new Map<string, StoredLoc>();
  /** Freed files parked for reuse (see src/runtime/recycle.ts): name -> size. */
  private readonly parked = new Map<string, number>();
  parkedBytes = 0;
  private parkSeq = 0;

  constructor(
    readonly dir: string,
    readonly spillDir: string,
    readonly capacity: number,
  ) {
    fs.mkdirSync(path.join(dir, FREE_DIR), { recursive: true, mode: 0o700 });
    fs.mkdirSync(spillDir, { recursive: true, mode: 0o700 });
  }

  /** Parked files may hold this much (their pages stay in memory, ready to reuse). */
  private get parkCap(): number {
    return Math.min(this.capacity * 0.1, 512 * 1024 ** 2);
  }

  /** A worker wrote an object: account for it, spilling older ones if we are over capacity. */
  add(id: string, loc: StoredLoc): void {
    if (loc.rc && this.parked.has(loc.rc)) {
      this.parkedBytes -= this.parked.get(loc.rc)!;
      this.parked.delete(loc.rc);
    }
    if (loc.path.startsWith(this.spillDir)) {
      this.spilledBytes += loc.size;
      return;
    }
    this.inMemory.set(id, loc);
    this.used += loc.size;
    this.makeRoom(0, id);
    if (loc.size >= PREFAULT_MIN_BYTES) this.prefault(loc.size);
  }

  private prefaulting = 0;

  /**
   * After a big object of some size, have a parked file of that size class ready (pages
   * touched in the background, on libuv's thread pool), so the next one of a similar size is
   * written into warm memory: what a pre-mapped arena gives Ray's plasma store.
   */
  private prefault(size: number): void {
    const cls = 2 ** Math.ceil(Math.log2(size));
    for (const s of this.parked.values()) if (s >= size && s <= size * 2) return;
    if (this.prefaulting || this.parkedBytes + cls > this.parkCap || this.used + this.parkedBytes + cls > this.capacity) return;
    this.prefaulting = cls;
    const name = `${cls}.${++this.parkSeq}`;
    // Written beside .free/ and renamed in only once complete: a writer that took a file
    // still being filled got its data overwritten with zeros and the file re-extended.
    const tmp = path.join(this.dir, `.prefault-${name}`);
    fs.writeFile(tmp, Buffer.alloc(cls), (err) => {
      this.prefaulting = 0;
      if (!err) {
        try {
          fs.renameSync(tmp, path.join(this.dir, FREE_DIR, name));
          this.parked.set(name, cls);
          this.parkedBytes += cls;
          return;
        } catch {
          /* the store is going away */
        }
      }
      fs.unlink(tmp, () => {});
    });
  }

  /** Mark an object as just used (moves it to the young end). */
  touch(id: string): void {
    const loc = this.inMemory.get(id);
    if (!loc) return;
    this.inMemory.delete(id);
    this.inMemory.set(id, loc);
  }

  /** Bring a spilled object back into memory when it fits without spilling what is in use. */
  restore(id: string, loc: StoredLoc): void {
    if (!loc.path.startsWith(this.spillDir) || this.used + loc.size > this.capacity) return;
    const target = path.join(this.dir, path.basename(loc.path));
    try {
      fs.copyFileSync(loc.path, target);
      fs.unlinkSync(loc.path);
    } catch {
      return;
    }
    this.spilledBytes -= loc.size;
    loc.path = target;
    this.inMemory.set(id, loc);
    this.used += loc.size;
    this.restoreCount++;
  }

  free(id: string, loc: StoredLoc): void {
    if (this.inMemory.delete(id)) {
      this.used -= loc.size;
      if (loc.size >= RECYCLE_MIN_BYTES && this.parkedBytes + loc.size <= this.parkCap && this.park(loc)) return;
    } else if (loc.path.startsWith(this.spillDir)) this.spilledBytes -= loc.size;
    fs.unlink(loc.path, () => {});
  }

  private park(loc: StoredLoc): boolean {
    const name = `${loc.size}.${++this.parkSeq}`;
    try {
      fs.renameSync(loc.path, path.join(this.dir, FREE_DIR, name));
    } catch {
      return false;
    }
    this.parked.set(name, loc.size);
    this.parkedBytes += loc.size;
    return true;
  }

  /** Give parked pages back to the system (the store needs the memory for live objects). */
  private dropParked(bytes: number): void {
    for (const [name, size] of this.parked) {
      if (bytes <= 0) break;
      fs.unlink(path.join(this.dir, FREE_DIR, name), () => {});
      this.parked.delete(name);
      this.parkedBytes -= size;
      bytes -= size;
    }
  }

  /** Spill least recently used objects until `extra` more bytes fit (never `keep`). */
  makeRoom(extra: number, keep?: string): void {
    const over = this.used + this.parkedBytes + extra - this.capacity;
    if (over > 0 && this.parkedBytes) this.dropParked(over);
    if (this.used + extra <= this.capacity) return;
    for (const [id, loc] of this.inMemory) {
      if (this.used + extra <= this.capacity) break;
      if (id === keep) continue;
      const target = path.join(this.spillDir, path.basename(loc.path));
      try {
        fs.copyFileSync(loc.path, target);
        fs.unlinkSync(loc.path);
      } catch {
        continue;
      }
      this.inMemory.delete(id);
      this.used -= loc.size;
      this.spilledBytes += loc.size;
      this.spillCount++;
      // Readers that already hold the old path get ENOENT and ask again (see Core.readValue).
      loc.path = target;
    }
  }

  /** Remove every file: the agent is going away. */
  destroy(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.rmSync(this.spillDir, { recursive: true, force: true });
  }

  stats() {
    return {
      capacity: this.capacity,
      used: this.used,
      objects: this.inMemory.size,
      spilledBytes: this.spilledBytes,
      spillCount: this.spillCount,
      parkedBytes: this.parkedBytes,
      restoreCount: this.restoreCount,
    };
  }
}
