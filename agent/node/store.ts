// The node's store for large objects: one file per object under /dev/shm (every local
// worker reads it without a network hop), spilled to disk when the store's capacity is
// reached and restored on access when room comes back.
import fs from "node:fs";
import path from "node:path";
import type { StoredLoc } from "../../src/protocol/values.js";

export class ObjectStore {
  used = 0;
  spilledBytes = 0;
  spillCount = 0;
  restoreCount = 0;
  /** Objects in shared memory, least recently used first (Map keeps insertion order). */
  private readonly inMemory = new Map<string, StoredLoc>();

  constructor(
    readonly dir: string,
    readonly spillDir: string,
    readonly capacity: number,
  ) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(spillDir, { recursive: true, mode: 0o700 });
  }

  /** A worker wrote an object: account for it, spilling older ones if we are over capacity. */
  add(id: string, loc: StoredLoc): void {
    if (loc.path.startsWith(this.spillDir)) {
      this.spilledBytes += loc.size;
      return;
    }
    this.inMemory.set(id, loc);
    this.used += loc.size;
    this.makeRoom(0, id);
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
    if (this.inMemory.delete(id)) this.used -= loc.size;
    else if (loc.path.startsWith(this.spillDir)) this.spilledBytes -= loc.size;
    fs.unlink(loc.path, () => {});
  }

  /** Spill least recently used objects until `extra` more bytes fit (never `keep`). */
  makeRoom(extra: number, keep?: string): void {
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
      restoreCount: this.restoreCount,
    };
  }
}
