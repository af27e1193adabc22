// Writing a large object into the shared-memory store. Freed object files of 1 MiB and more
// are not unlinked but parked in <store>/.free/ (named "<size>.<n>"); a writer takes one by
// renaming it (atomic: exactly one process wins) and overwrites it in place. Its pages are
// already mapped, so a 100 MB put costs a warm memcpy instead of 25,000 page faults.
//
// A reader with the native helpers maps the file instead of copying it (mapStoredFile). Its
// mapping owns a hard link in <store>/.pins/ ("<pid>.<n>"), removed when the mapping goes: a
// freed file whose link count is above 1 is still mapped by somebody, so the store unlinks it
// instead of parking it, and no later object is ever written into pages a reader still sees.
import fs from "node:fs";
import path from "node:path";
import { MAP_MIN_BYTES, native } from "./native.js";
import { WriteMappings, fits, parkedSize } from "./write-mappings.js";

export const RECYCLE_MIN_BYTES = 1024 * 1024;
export const FREE_DIR = ".free";
/**
 * A file the store keeps while transfers run on the node (and QUIET_MS after): warming ahead
 * in other processes (write-mappings.ts) waits while it exists.
 */
export const BUSY_FILE = ".busy";
export const PIN_DIR = ".pins";

/** Store folders known to have (true) or lack (false) a pins folder; spill folders lack one. */
const pinDirs = new Map<string, boolean>();
let pinSeq = 0;

/**
 * Map a stored object's file for reading (private copy-on-write pages: writing to the value
 * never changes the stored object), or undefined when the native helpers are off or the
 * object is small (a copy is cheaper than map + unmap). Throws with code ENOENT when the file
 * is gone (spilled or freed meanwhile), like a read would.
 */
export function mapStoredFile(file: string, size: number): ArrayBuffer | undefined {
  const nat = native();
  if (!nat || size < MAP_MIN_BYTES) return undefined;
  const pin = pinStoredFile(file);
  try {
    return nat.map(pin ?? file, size, 0, pin);
  } catch (e) {
    if (pin) fs.rmSync(pin, { force: true });
    throw e;
  }
}

/**
 * A new pin (hard link in the store's pins folder) for a store file somebody is about to map
 * or send: its path, to unlink when done. Undefined for a spilled file (no pins folder there:
 * spilled files are never recycled, only unlinked). Throws with code ENOENT when the file is
 * gone (spilled or freed meanwhile).
 */
export function pinStoredFile(file: string): string | undefined {
  const dir = path.join(path.dirname(file), PIN_DIR);
  let hasPins = pinDirs.get(dir);
  if (hasPins === undefined) pinDirs.set(dir, (hasPins = fs.existsSync(dir)));
  if (!hasPins) return undefined;
  const pin = path.join(dir, `${process.pid}.${++pinSeq}`);
  fs.linkSync(file, pin);
  return pin;
}

/** True when somebody maps this file (it has a pin beside its store name). */
export function isPinned(file: string): boolean {
  try {
    return fs.statSync(file).nlink > 1;
  } catch {
    return false;
  }
}

/** Remove the pins of processes that are gone (a mapping dies with its process, its pin does not). */
export function sweepPins(storeDir: string, alive: (pid: number) => boolean): number {
  const dir = path.join(storeDir, PIN_DIR);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  let n = 0;
  const seen = new Map<number, boolean>();
  for (const name of names) {
    const pid = Number(name.slice(0, name.indexOf(".")));
    let ok = seen.get(pid);
    if (ok === undefined) seen.set(pid, (ok = Number.isInteger(pid) && pid > 0 && alive(pid)));
    if (ok) continue;
    try {
      fs.unlinkSync(path.join(dir, name));
      n++;
    } catch {
      /* removed by its process meanwhile */
    }
  }
  return n;
}

/**
 * Take a parked file that fits `size` bytes by renaming it to `target` (atomic: exactly one
 * process wins). Returns its parked name, or undefined when none fits.
 */
export function takeParkedFile(storeDir: string, size: number, target: string, preferred?: (name: string) => boolean): string | undefined {
  if (size < RECYCLE_MIN_BYTES) return undefined;
  const free = path.join(storeDir, FREE_DIR);
  let names: string[] = [];
  try {
    names = fs.readdirSync(free);
  } catch {
    return undefined; // nothing parked yet
  }
  // Smallest file that fits, and not more than twice as big (the rest would be wasted); one
  // this process has mapped ahead before any other.
  const fit = names
    .map((n) => ({ n, size: parkedSize(n), mapped: preferred?.(n) ?? false }))
    .filter((f) => fits(f.size, size))
    .sort((a, b) => Number(b.mapped) - Number(a.mapped) || a.size - b.size);
  for (const f of fit) {
    try {
      fs.renameSync(path.join(free, f.n), target);
      return f.n;
    } catch {
      /* another process took it */
    }
  }
  return undefined;
}

const writeMappings = new Map<string, WriteMappings>();

/** This process's mappings ahead for writes into one store (none without the native helpers). */
export function writeMappingsOf(storeDir: string): WriteMappings | undefined {
  if (!native()) return undefined;
  let w = writeMappings.get(storeDir);
  if (!w) writeMappings.set(storeDir, (w = new WriteMappings(path.join(storeDir, FREE_DIR), path.join(storeDir, BUSY_FILE))));
  return w;
}

/**
 * Write `data` to `target`, reusing a parked file when one fits; returns the reused name.
 * With `mapAhead` (a driver's puts), through this process's mapping of the file when it has
 * one (see write-mappings.ts).
 */
export function writeObjectFile(storeDir: string, target: string, data: Uint8Array, mapAhead = false): string | undefined {
  const maps = mapAhead && data.byteLength >= RECYCLE_MIN_BYTES ? writeMappingsOf(storeDir) : undefined;
  const taken = takeParkedFile(storeDir, data.byteLength, target, maps?.isMapped);
  if (!taken) {
    fs.writeFileSync(target, data);
    maps?.wrote(data.byteLength);
    return undefined;
  }
  const fd = fs.openSync(target, "r+");
  try {
    if (!maps?.writeThrough(fd, data)) {
      let off = 0;
      while (off < data.byteLength) off += fs.writeSync(fd, data, off, data.byteLength - off, off);
    }
    fs.ftruncateSync(fd, data.byteLength);
  } finally {
    fs.closeSync(fd);
  }
  maps?.wrote(data.byteLength);
  return taken;
}

/**
 * Read an object's file while it is still arriving from another node (StoredLoc.g): the file
 * grows to `size` bytes as the copy lands, so the reader copies what is there and waits for
 * more, instead of waiting for the whole transfer first. If the transfer fails the agent
 * removes the file: the reader sees its file unlinked and fails with code ENOENT, which makes
 * Core ask the agent for the object again.
 */
export async function readGrowing(file: string, size: number): Promise<Buffer> {
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const n = fs.readSync(fd, buf, off, Math.min(size - off, GROWING_READ_BYTES), off);
      if (n > 0) {
        off += n;
        continue;
      }
      if (fs.fstatSync(fd).nlink === 0) {
        throw Object.assign(new Error(`the copy of ${path.basename(file)} being fetched was abandoned after ${off} of ${size} bytes`), { code: "ENOENT" });
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}
const GROWING_READ_BYTES = 8 * 1024 * 1024;
