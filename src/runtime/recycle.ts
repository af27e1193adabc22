// Writing a large object into the shared-memory store. Freed object files of 1 MiB and more
// are not unlinked but parked in <store>/.free/ (named "<size>.<n>"); a writer takes one by
// renaming it (atomic: exactly one process wins) and overwrites it in place. Its pages are
// already mapped, so a 100 MB put costs a warm memcpy instead of 25,000 page faults.
import fs from "node:fs";
import path from "node:path";

export const RECYCLE_MIN_BYTES = 1024 * 1024;
export const FREE_DIR = ".free";

/**
 * Take a parked file that fits `size` bytes by renaming it to `target` (atomic: exactly one
 * process wins). Returns its parked name, or undefined when none fits.
 */
export function takeParkedFile(storeDir: string, size: number, target: string): string | undefined {
  if (size < RECYCLE_MIN_BYTES) return undefined;
  const free = path.join(storeDir, FREE_DIR);
  let names: string[] = [];
  try {
    names = fs.readdirSync(free);
  } catch {
    return undefined; // nothing parked yet
  }
  // Smallest file that fits, and not more than twice as big (the rest would be wasted).
  const fit = names
    .map((n) => ({ n, size: Number(n.slice(0, n.indexOf("."))) }))
    .filter((f) => f.size >= size && f.size <= size * 2)
    .sort((a, b) => a.size - b.size);
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

/** Write `data` to `target`, reusing a parked file when one fits; returns the reused name. */
export function writeObjectFile(storeDir: string, target: string, data: Uint8Array): string | undefined {
  const taken = takeParkedFile(storeDir, data.byteLength, target);
  if (!taken) {
    fs.writeFileSync(target, data);
    return undefined;
  }
  const fd = fs.openSync(target, "r+");
  try {
    let off = 0;
    while (off < data.byteLength) off += fs.writeSync(fd, data, off, data.byteLength - off, off);
    fs.ftruncateSync(fd, data.byteLength);
  } finally {
    fs.closeSync(fd);
  }
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
