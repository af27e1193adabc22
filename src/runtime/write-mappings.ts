// A writer's own mappings of the store's parked files, made ahead so that the next large put
// is one memcpy into pages this process already has mapped: what mapping its whole arena once
// gives a client of Ray's plasma store. Without them a put into a warm parked file is a
// write(2) (the kernel looks up and locks each 4 KiB page: ~0.6x of memcpy here), and mapping
// at put time costs more still (populating 100 MB of page tables takes ~12 ms).
//
// Only a driver that keeps putting large objects pays for this (a program waits on its put;
// a worker's large result is mostly read elsewhere right after, and populating ahead in the
// worker took a core from that transfer: 100 MB between nodes, 3.1 -> 2.8 GB/s, since most
// files it maps are new ones whose page tables cost ~12 ms each): from its second write of a
// size within INTEREST_MS, it watches the store's .free/ folder and maps parked files that fit
// (at most MAX_MAPPINGS, one more per write or change there), their page tables populated on
// libuv's thread pool. It writes through a mapping only after winning the file by rename
// (takeParkedFile), so another process's object is never touched: the mapping of a file
// somebody else took waits, unused, for the file to be parked again (same inode, new name).
//
// Holding a mapping keeps a file's pages alive after the store unlinks it, memory the store
// believes freed. So every mapping has an open fd whose link count is checked on each scan and
// every PRUNE_MS; a file unlinked is unmapped then, and everything is let go when the process
// has written no large object for INTEREST_MS.
import fs from "node:fs";
import path from "node:path";
import { native, type SharedMapping } from "./native.js";

/** Mappings one process keeps at most (files of any size). */
const MAX_MAPPINGS = 4;
/** A writer that wrote no large object for this long lets its mappings go. */
const INTEREST_MS = 5_000;
/** How often mappings are checked for files the store has unlinked meanwhile. */
const PRUNE_MS = 250;

interface Entry {
  fd: number;
  mapping: SharedMapping;
  /** Bytes mapped (the file's size when it was mapped). */
  size: number;
  /** Its name in .free/ at the last scan, or undefined when it is not parked (somebody's object). */
  parkedAs?: string;
  lastUsed: number;
}

/** Parked files between `size` and twice that fit an object of `size` (as takeParkedFile). */
export const fits = (fileSize: number, size: number): boolean => fileSize >= size && fileSize <= size * 2;

/** The size a parked file's name ("<size>.<n>") gives (NaN for another name). */
export const parkedSize = (name: string): number => Number(name.slice(0, name.indexOf(".")));

export class WriteMappings {
  /** Inode -> mapping (an inode stays the same while it is parked, taken and parked again). */
  private readonly byIno = new Map<number, Entry>();
  /** Sizes of the large objects written lately, with when: which parked files are worth mapping. */
  private readonly sizes = new Map<number, number>();
  private watcher?: fs.FSWatcher;
  private timer?: NodeJS.Timeout;
  private scanQueued = false;
  /** Inodes whose page tables are being populated on the thread pool now. */
  private readonly populating = new Set<number>();
  private lastWrite = 0;
  /** Writes that went through a mapping (tests, and figures of the benchmark's runs). */
  writesThrough = 0;

  /** `free`: the store's folder of parked files; `busy`: its mark of transfers running (BUSY_FILE). */
  constructor(
    private readonly free: string,
    private readonly busy?: string,
    private readonly nowMs: () => number = Date.now,
  ) {}

  /** Parked names this process has mapped (takeParkedFile tries them first). */
  isMapped = (parkedName: string): boolean => {
    for (const e of this.byIno.values()) if (e.parkedAs === parkedName) return true;
    return false;
  };

  /**
   * Write `data` into the file behind `fd`, just taken from .free/ by rename, through this
   * process's mapping of it: true when done so, false when the caller must write it (not
   * mapped, or mapped shorter than `data`).
   */
  writeThrough(fd: number, data: Uint8Array): boolean {
    if (this.byIno.size === 0) return false;
    const st = fs.fstatSync(fd);
    const e = this.byIno.get(st.ino);
    if (!e || e.size < data.byteLength) return false;
    // The file may be shorter than this object (a smaller one was written into it before):
    // extend it first, since touching a mapping past the file's end is a SIGBUS.
    if (st.size < data.byteLength) fs.ftruncateSync(fd, data.byteLength);
    try {
      native()!.copyInto(e.mapping, 0, data); // checks its arguments before it copies a byte
    } catch {
      this.release(st.ino);
      return false;
    }
    e.parkedAs = undefined;
    e.lastUsed = this.nowMs();
    this.writesThrough++;
    return true;
  }

  /** A large object of `size` bytes was written: map ahead for the next one, if this is a habit. */
  wrote(size: number): void {
    const now = this.nowMs();
    const seen = this.sizes.get(size);
    this.sizes.set(size, now);
    this.lastWrite = now;
    if (this.sizes.size > MAX_MAPPINGS) this.sizes.delete(this.sizes.keys().next().value!);
    // A driver that put one large object maps nothing: populating page tables takes a core for
    // ~12 ms per 100 MB, paid back only by a next put of about that size.
    if (seen === undefined || now - seen > INTEREST_MS) return;
    this.start();
    // Now, not on a later turn of the event loop: a loop of puts may never yield to it. A scan
    // costs tens of µs; the page tables are populated on the thread pool.
    this.scan();
  }

  private start(): void {
    if (this.timer) return;
    try {
      // Parked files appear here when objects are freed and when the agent makes warm ones.
      this.watcher = fs.watch(this.free, { persistent: false }, () => this.queueScan());
      this.watcher.on("error", () => this.stop());
    } catch {
      return; // no .free/ yet (nothing parked): the next write tries again
    }
    this.timer = setInterval(() => {
      if (this.nowMs() - this.lastWrite > INTEREST_MS) this.stop();
      else this.prune();
    }, PRUNE_MS);
    this.timer.unref();
  }

  /** Let every mapping go (the process stopped writing large objects, or the store is gone). */
  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const ino of [...this.byIno.keys()]) this.release(ino);
    this.sizes.clear();
  }

  private queueScan(): void {
    if (this.scanQueued) return;
    this.scanQueued = true;
    setImmediate(() => {
      this.scanQueued = false;
      this.scan();
    });
  }

  /** Unmap the files the store has unlinked (their pages would otherwise stay allocated). */
  private prune(): void {
    for (const [ino, e] of this.byIno) {
      let gone = true;
      try {
        gone = fs.fstatSync(e.fd).nlink === 0;
      } catch {
        /* fd closed under us: let it go */
      }
      if (gone) this.release(ino);
    }
  }

  private release(ino: number): void {
    const e = this.byIno.get(ino);
    if (!e) return;
    this.byIno.delete(ino);
    // Not under a populate running on the thread pool: its range could meanwhile be another
    // mapping's. Its callback unmaps it instead.
    if (!this.populating.has(ino)) this.unmap(e);
  }

  private unmap(e: Entry): void {
    native()?.unmap(e.mapping, true);
    fs.close(e.fd, () => {});
  }

  /** Match parked files to mappings, and map one more file that fits a recent size. */
  private scan(): void {
    if (!this.timer) return;
    this.prune();
    let names: string[];
    try {
      names = fs.readdirSync(this.free);
    } catch {
      return this.stop(); // the store is gone
    }
    const candidates: Array<{ name: string; size: number }> = [];
    const recent = [...this.sizes.keys()];
    for (const name of names) {
      const size = parkedSize(name);
      if (!(size > 0) || !recent.some((s) => fits(size, s))) continue;
      candidates.push({ name, size });
    }
    for (const e of this.byIno.values()) e.parkedAs = undefined;
    const unmapped: Array<{ name: string; size: number }> = [];
    for (const c of candidates) {
      let ino: number;
      try {
        ino = fs.statSync(path.join(this.free, c.name)).ino;
      } catch {
        continue; // taken meanwhile
      }
      const e = this.byIno.get(ino);
      if (e) e.parkedAs = c.name;
      else unmapped.push(c);
    }
    if (unmapped.length === 0) return;
    if (this.byIno.size >= MAX_MAPPINGS && !this.evictOne()) return;
    // Smallest first, as takeParkedFile takes them.
    unmapped.sort((a, b) => a.size - b.size);
    this.map(unmapped[0]!);
  }

  /** Make room: drop the least recently used mapping of a file not parked now. */
  private evictOne(): boolean {
    let victim: number | undefined;
    let oldest = Infinity;
    for (const [ino, e] of this.byIno) {
      if (e.parkedAs === undefined && e.lastUsed < oldest) (victim = ino), (oldest = e.lastUsed);
    }
    if (victim === undefined) return false;
    this.release(victim);
    return true;
  }

  private map(c: { name: string; size: number }): void {
    const nat = native()!;
    let fd: number;
    try {
      fd = fs.openSync(path.join(this.free, c.name), "r+");
    } catch {
      return; // taken meanwhile
    }
    let entry: Entry;
    let ino: number;
    try {
      // Size and inode from the fd: the name may be taken and renamed away at any moment.
      const st = fs.fstatSync(fd);
      ino = st.ino;
      if (this.byIno.has(ino) || st.size <= 0) throw new Error("mapped already");
      entry = { fd, mapping: nat.mapShared(fd, st.size), size: st.size, parkedAs: c.name, lastUsed: this.nowMs() };
    } catch {
      fs.closeSync(fd);
      return;
    }
    this.byIno.set(ino, entry);
    this.populating.add(ino);
    // MADV_POPULATE_WRITE: fills page tables without writing a byte (the file may be taken
    // meanwhile), and fails instead of faulting where the file was cut shorter. A write may use
    // the mapping before it is done: the pages it has not reached yet are faulted by the copy.
    // It stands aside while the node transfers (a core for ~12 ms per 100 MB, which a transfer
    // of the object just written wants), as the store's own warming does.
    nat.populate(
      entry.mapping,
      0,
      entry.size,
      () => {
        this.populating.delete(ino);
        if (this.byIno.get(ino) !== entry) this.unmap(entry); // let go of while it was populated
        else if (this.timer) this.queueScan();
      },
      this.busy,
    );
  }

  /** For tests: how many files this process has mapped now. */
  get mappedCount(): number {
    return this.byIno.size;
  }
}
