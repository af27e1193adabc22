// The node's store for large objects: one file per object under /dev/shm (every local
// worker reads it without a network hop), spilled to disk when the store's capacity is
// reached and restored on access when room comes back.
import fs from "node:fs";
import path from "node:path";
import type { StoredLoc } from "../../src/protocol/values.js";
import { native, type SharedMapping } from "../../src/runtime/native.js";
import { fits } from "../../src/runtime/write-mappings.js";
import { BUSY_FILE, FREE_DIR, PIN_DIR, RECYCLE_MIN_BYTES, isPinned, sweepPins } from "../../src/runtime/recycle.js";

/** Objects from this size up make the store prepare warm memory for the next one. */
const PREFAULT_MIN_BYTES = 8 * 1024 * 1024;
/** Warming ahead faults pages in this many bytes at a time (a few ms each). */
const WARM_CHUNK_BYTES = 8 * 1024 * 1024;
/** Warming ahead waits until no transfer has run for this long. */
const QUIET_MS = 30;
/** Warm files kept ready per size class. */
const WARM_PER_CLASS = 2;
/** Pre-faulting writes zeros from this buffer (allocated once, on first use). */
let zeroBuf: Buffer | undefined;
const zeros = (): Buffer => (zeroBuf ??= Buffer.alloc(4 * 1024 * 1024));

/**
 * The size a pre-faulted file gets for an object of `size` bytes: rounded up to the next
 * eighth of its power of two (1 MiB at least), so a file fits the next object of about the
 * same size with at most 12.5% to cut off, where rounding to a power of two wasted up to half.
 */
export function sizeClass(size: number): number {
  const step = Math.max(1024 * 1024, 2 ** (Math.floor(Math.log2(Math.max(size, 1))) - 3));
  return Math.ceil(size / step) * step;
}

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
    fs.mkdirSync(path.join(dir, PIN_DIR), { recursive: true, mode: 0o700 });
    fs.mkdirSync(spillDir, { recursive: true, mode: 0o700 });
  }

  /**
   * Drop the pins of processes that have exited (their mappings went with them); called when
   * a worker or driver exits and now and then for any other process that read from the store.
   */
  sweepPins(): number {
    return sweepPins(this.dir, (pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code === "EPERM";
      }
    });
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
    // A worker took a warm file for its object: this agent has no use for its mapping now.
    if (loc.rc) this.dropWarmMapping(loc.rc);
    if (loc.path.startsWith(this.spillDir)) {
      this.spilledBytes += loc.size;
      return;
    }
    this.inMemory.set(id, loc);
    this.used += loc.size;
    this.makeRoom(0, id);
    if (loc.size >= PREFAULT_MIN_BYTES) this.prefault(loc.size);
  }

  /** Size class being pre-faulted now (0: none). */
  private prefaulting = 0;
  /** Size classes wanted warm, latest last (a class asked for while another is pre-faulted waits here). */
  private readonly wanted = new Set<number>();

  /** Parked files that can take an object of `size` and still exist (a writer may have taken one already). */
  private warmFor(size: number): number {
    let n = 0;
    for (const [name, s] of this.parked) {
      if (!fits(s, size)) continue;
      if (fs.existsSync(path.join(this.dir, FREE_DIR, name))) n++;
      else {
        // Taken by a writer whose seal has not arrived yet: it is no longer warm memory we hold.
        this.parked.delete(name);
        this.parkedBytes -= s;
        this.dropWarmMapping(name);
      }
    }
    return n;
  }

  /**
   * After a big object of some size, have WARM_PER_CLASS parked files of its size class ready
   * (pages touched in the background, on libuv's thread pool), so the next ones of a similar
   * size are written into warm memory: what a pre-mapped arena gives Ray's plasma store. Two,
   * so a writer that puts again right away still finds one while the next is being made.
   */
  private prefault(size: number): void {
    const cls = sizeClass(size);
    if (this.warmFor(size) >= WARM_PER_CLASS) return;
    if (this.prefaulting) {
      this.wanted.add(cls);
      return;
    }
    if (this.parkedBytes + cls > this.parkCap || this.used + this.parkedBytes + cls > this.capacity) return;
    this.prefaulting = cls;
    const name = `${cls}.${++this.parkSeq}`;
    // Written beside .free/ and renamed in only once complete: a writer that took a file
    // still being filled got its data overwritten with zeros and the file re-extended.
    // Zeros from one small reused buffer: only the file's pages are touched, not ours.
    const tmp = path.join(this.dir, `.prefault-${name}`);
    const done = (ok: boolean, mapping?: SharedMapping) => {
      this.prefaulting = 0;
      if (ok && !this.destroyed) {
        try {
          fs.renameSync(tmp, path.join(this.dir, FREE_DIR, name));
          this.parked.set(name, cls);
          this.parkedBytes += cls;
          this.prefaultCount++;
          if (mapping) this.warmMaps.set(name, mapping);
        } catch {
          ok = false; // the store is going away
        }
      } else ok = false;
      if (!ok) {
        if (mapping) native()?.unmap(mapping, true);
        fs.unlink(tmp, () => {});
      }
      const next = [...this.wanted].pop();
      this.wanted.clear();
      if (ok && !this.destroyed) this.prefault(next ?? cls);
    };
    if (native()) {
      // Populating a shared mapping allocates the file's pages (the kernel zeroes them) and
      // leaves them mapped here, ready for a transfer from another node to land in (see
      // takeWarmMapping).
      try {
        fs.closeSync(fs.openSync(tmp, "w", 0o600));
        fs.truncateSync(tmp, cls);
      } catch {
        return done(false);
      }
      this.warmUp(tmp, cls, (ab) => done(!!ab, ab));
      return;
    }
    fs.open(tmp, "w", 0o600, (err, fd) => {
      if (err) return done(false);
      let off = 0;
      const step = (e: Error | null) => {
        if (e || this.destroyed) return fs.close(fd, () => done(false));
        if (off >= cls) return fs.close(fd, (ce) => done(!ce));
        const z = zeros();
        const n = Math.min(z.length, cls - off);
        const at = off;
        off += n;
        this.whenQuiet(() => fs.write(fd, z, 0, n, at, (we) => step(we)));
      };
      step(null);
    });
  }

  /**
   * Map a file shared and fault its pages in, WARM_CHUNK_BYTES at a time on the thread pool,
   * each chunk only while no transfer runs here (whenQuiet): warming ahead is work for idle
   * moments, and populating 100 MB of fresh pages in one go took cores and memory bandwidth
   * from the very transfers it prepares for. Calls back with the mapping, or undefined.
   */
  private warmUp(file: string, size: number, cb: (ab: SharedMapping | undefined) => void): void {
    const nat = native()!;
    let ab: SharedMapping;
    try {
      ab = nat.mapShared(file, size);
    } catch {
      return cb(undefined);
    }
    let off = 0;
    const step = (err?: Error | null) => {
      if (err || this.destroyed) {
        nat.unmap(ab, true);
        return cb(undefined);
      }
      if (off >= size) return cb(ab);
      const n = Math.min(WARM_CHUNK_BYTES, size - off);
      const at = off;
      off += n;
      this.whenQuiet(() => nat.populate(ab, at, n, step));
    };
    step();
  }

  /** Transfers into or out of this store now running (warming ahead waits for none). */
  private transfers = 0;
  private readonly quietWaiters: Array<() => void> = [];

  private lastTransferEnd = 0;
  private quietTimer?: NodeJS.Timeout;

  /** A transfer starts; call what this returns when it ends (once; more calls do nothing). */
  transferStarted(): () => void {
    if (this.transfers++ === 0) this.markBusy(true);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.lastTransferEnd = Date.now();
      if (--this.transfers === 0) this.wakeQuiet();
    };
  }

  /**
   * Run `f` once no transfer has run here for QUIET_MS: right after one, the reader it was
   * for wants the cores (and transfers come in bursts).
   */
  private whenQuiet(f: () => void): void {
    if (this.destroyed || (this.transfers === 0 && Date.now() - this.lastTransferEnd >= QUIET_MS)) return f();
    this.quietWaiters.push(f);
    if (this.transfers === 0) this.wakeQuiet();
  }

  private wakeQuiet(): void {
    if (this.quietTimer) return;
    const wait = Math.max(0, this.lastTransferEnd + QUIET_MS - Date.now());
    this.quietTimer = setTimeout(() => {
      this.quietTimer = undefined;
      if (this.transfers > 0) return; // the next one's end wakes them
      if (Date.now() - this.lastTransferEnd < QUIET_MS) return this.wakeQuiet();
      this.markBusy(false);
      for (const f of this.quietWaiters.splice(0)) f();
    }, wait);
    this.quietTimer.unref();
  }

  private busy = false;

  /**
   * Keep BUSY_FILE while transfers run and QUIET_MS after: what other processes' warming
   * ahead (write-mappings.ts) waits on, as this store's own does on whenQuiet.
   */
  private markBusy(on: boolean): void {
    if (on === this.busy || this.destroyed) return;
    this.busy = on;
    const file = path.join(this.dir, BUSY_FILE);
    try {
      if (on) fs.closeSync(fs.openSync(file, "w", 0o600));
      else fs.unlinkSync(file);
    } catch {
      /* the store is going away */
    }
  }
  prefaultCount = 0;
  private destroyed = false;
  /** Warm parked files this agent keeps mapped (native helpers only): parked name -> mapping. */
  private readonly warmMaps = new Map<string, SharedMapping>();

  /**
   * The mapping of a parked file just taken for a transfer (takeParkedFile): the caller owns
   * it now and unmaps it when done. Undefined when that file was not pre-mapped.
   */
  takeWarmMapping(name: string): SharedMapping | undefined {
    const ab = this.warmMaps.get(name);
    this.warmMaps.delete(name);
    return ab;
  }

  /** Unmap a mapping a transfer wrote through, once transfers here pause (see FetchSpec.release). */
  releaseMapping(m: SharedMapping): void {
    this.whenQuiet(() => native()?.unmap(m, true));
  }

  private dropWarmMapping(name: string): void {
    const ab = this.takeWarmMapping(name);
    if (ab) native()?.unmap(ab, true);
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
      // A file somebody still maps (see PIN_DIR) is unlinked, never reused: its reader keeps its pages.
      if (loc.size >= RECYCLE_MIN_BYTES && this.parkedBytes + loc.size <= this.parkCap && !isPinned(loc.path) && this.park(loc)) return;
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
    this.mapAhead(name, loc.size);
    return true;
  }

  /** Map a big parked file ahead (native helpers), so that a transfer into it needs no populate. */
  private mapAhead(name: string, size: number): void {
    const nat = native();
    if (!nat || size < PREFAULT_MIN_BYTES) return;
    this.warmUp(path.join(this.dir, FREE_DIR, name), size, (ab) => {
      if (!ab) return; // taken meanwhile: it maps nothing
      if (this.parked.has(name) && !this.destroyed) this.warmMaps.set(name, ab);
      else nat.unmap(ab, true);
    });
  }

  /** Give parked pages back to the system (the store needs the memory for live objects). */
  private dropParked(bytes: number): void {
    for (const [name, size] of this.parked) {
      if (bytes <= 0) break;
      fs.unlink(path.join(this.dir, FREE_DIR, name), () => {});
      this.parked.delete(name);
      this.parkedBytes -= size;
      this.dropWarmMapping(name);
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
    this.destroyed = true;
    if (this.quietTimer) clearTimeout(this.quietTimer);
    for (const f of this.quietWaiters.splice(0)) f();
    for (const name of [...this.warmMaps.keys()]) this.dropWarmMapping(name);
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
      prefaultCount: this.prefaultCount,
      restoreCount: this.restoreCount,
    };
  }
}
