// tray's optional native helpers (native/tray_native.cc, built into dist/tray_native.node
// when a compiler is present). With them a large object is read by mapping its store file
// (no copy, no fresh pages) and sent between nodes with sendfile(2); without them every path
// falls back to plain reads and writes. TRAY_NATIVE=0 turns them off (tests of the fallback).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface NativeHelpers {
  /** Map a file lazily. mode 0: private copy-on-write (readers); 1: shared and writable (a transfer's destination). */
  map(file: string, size: number, mode: 0 | 1, pin?: string): ArrayBuffer;
  /** Fault in [offset, offset + length) of a live shared mapping, on the thread pool. */
  populate(ab: ArrayBuffer, offset: number, length: number, cb: (err: Error | null) => void): void;
  /** Unmap now (detaches the ArrayBuffer); a no-op for one that is not a live mapping. */
  unmap(ab: ArrayBuffer, inBackground?: boolean): void;
  sendFile(fd: number, file: string, offset: number, length: number, stallMs: number, cb: (err: (Error & { code?: string }) | null, sent: number) => void): void;
  recvInto(fd: number, ab: ArrayBuffer, offset: number, length: number, stallMs: number, cb: (err: (Error & { code?: string }) | null, got: number) => void): void;
  socketBuffers(fd: number, sndbuf: number, rcvbuf: number): void;
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
