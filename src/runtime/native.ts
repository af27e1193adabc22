// tray's optional native helpers (native/tray_native.cc, built into dist/tray_native.node
// when a compiler is present). With them a large object is read by mapping its store file
// (no copy, no fresh pages) and sent between nodes with sendfile(2); without them every path
// falls back to plain reads and writes. TRAY_NATIVE=0 turns them off (tests of the fallback).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * An agent's shared, writable mapping of a store file (mapShared): an opaque handle, not an
 * ArrayBuffer, so V8 does not count its pages as the agent's memory (which started a garbage
 * collection in the agent per warm 100 MB file). Native calls below take it where they take a
 * mapping.
 */
export type SharedMapping = { readonly __sharedMapping: true };

export interface NativeHelpers {
  /** Map a file lazily. mode 0: private copy-on-write (readers); 1: shared and writable (a transfer's destination). */
  map(file: string, size: number, mode: 0 | 1, pin?: string): ArrayBuffer;
  /** A file (by path, or an open fd the caller keeps) mapped shared and writable, as a handle (see SharedMapping). */
  mapShared(file: string | number, size: number): SharedMapping;
  /** The size of a live mapping (throws for one that is gone). */
  mappingSize(m: SharedMapping | ArrayBuffer): number;
  /** Copy bytes into a live mapping at offset. */
  copyInto(m: SharedMapping | ArrayBuffer, offset: number, bytes: Uint8Array): void;
  /**
   * Fault in [offset, offset + length) of a live shared mapping, on the thread pool; with
   * `yieldTo`, 8 MiB at a time, waiting (2 s at most in all) while that file exists.
   */
  populate(m: SharedMapping | ArrayBuffer, offset: number, length: number, cb: (err: Error | null) => void, yieldTo?: string): void;
  /** Unmap now (detaches an ArrayBuffer); a no-op for one that is not a live mapping. */
  unmap(m: SharedMapping | ArrayBuffer, inBackground?: boolean): void;
  sendFile(fd: number, file: string, offset: number, length: number, stallMs: number, cb: (err: (Error & { code?: string }) | null, sent: number) => void): void;
  recvInto(fd: number, dest: SharedMapping | ArrayBuffer, offset: number, length: number, stallMs: number, cb: (err: (Error & { code?: string }) | null, got: number) => void): void;
  socketBuffers(fd: number, sndbuf: number, rcvbuf: number): void;
  /** One write(2) to a socket: bytes written, or -errno (-11: it is full). */
  writeNow(fd: number, bytes: Uint8Array): number;
  /** Poll a socket until it has bytes to read (true) or `maxUs` µs have passed (false). */
  spinReadable(fd: number, maxUs: number): boolean;
}

/** Objects from this size up are mapped rather than copied when read. */
export const MAP_MIN_BYTES = 1024 * 1024;

let loaded: NativeHelpers | null | undefined;

function candidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // Beside the bundle (dist/), or from src/runtime in a source checkout (tests run there).
  return [path.join(here, "tray_native.node"), path.resolve(here, "../../dist/tray_native.node")];
}

/** The helpers, or undefined when they are not built, not loadable here, or turned off. */
export function native(): NativeHelpers | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  if (process.env.TRAY_NATIVE === "0" || process.platform !== "linux") return undefined;
  const req = createRequire(import.meta.url);
  for (const file of candidates()) {
    if (!fs.existsSync(file)) continue;
    try {
      loaded = req(file) as NativeHelpers;
      break;
    } catch {
      // Built for another architecture or libc (a host that got a foreign dist/): fall back.
    }
  }
  return loaded ?? undefined;
}

/** The OS file descriptor behind a net.Socket, when it has one (TCP and Unix sockets on Linux). */
export function socketFd(socket: unknown): number | undefined {
  const fd = (socket as { _handle?: { fd?: number } })?._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}
