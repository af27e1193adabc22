// The receiving end of one object transfer between nodes (see Distributed.fetchObject): a GET
// of /object/<id> on the holder's peer port, read straight off the TCP socket into one reused
// 1 MiB buffer (`onread`: no Buffer per 64 KiB read, no HTTP body stream) and written into the
// store file with one write(2) per read. Node's HTTP client cost about half the throughput
// here. A transfer that is cut, stalls, or brings too few or too many bytes removes its file:
// no half object stays behind, and a process reading the file as it grows (StoredLoc.g) sees
// it go and asks again.
//
// With tray's native helpers (src/runtime/native.ts) both ends copy less: the holder hands the
// file to the socket with sendfile(2) (no read into JavaScript memory), and the receiver maps
// the store file it fills and lets the kernel read the socket straight into those pages (one
// copy in all at this end, none through a reused buffer, no page faults). Between agents on
// the same host the stream runs over a Unix socket instead of TCP loopback (see ObjectPeer).
import fs from "node:fs";
import type http from "node:http";
import net from "node:net";
import os from "node:os";
import type { NodeView } from "../../src/protocol/cluster.js";
import { native, socketFd, type NativeHelpers, type SharedMapping } from "../../src/runtime/native.js";
import { pinStoredFile } from "../../src/runtime/recycle.js";

export interface FetchSpec {
  host: string;
  port: number;
  /** A Unix socket of the holder's (same host): used instead of host:port when given. */
  unixPath?: string;
  /** request path, e.g. /object/<id> (already URL-encoded) */
  path: string;
  token: string;
  /** the store file to write */
  file: string;
  /** the object's size: the response must bring exactly this many bytes */
  size: number;
  /**
   * The file is a parked store file taken for this object (warm pages): overwritten in place
   * and cut to `size` at the end. Otherwise a fresh file that grows as bytes arrive, so its
   * length is the progress a concurrent reader can rely on.
   */
  reuse: boolean;
  /** Give up when nothing arrives for this long. */
  stallMs: number;
  /**
   * Runs once the file exists and the body flows (the status was 200). Not with `mapping`: a
   * mapped file has its full length from the start, so its length says nothing of progress.
   */
  onStart?: () => void;
  /**
   * The reused file's shared mapping, made and populated ahead by the store (native helpers):
   * the socket is read straight into it (see the top of this file). fetchInto owns it from
   * here and unmaps it.
   */
  mapping?: SharedMapping;
  /**
   * Takes `mapping` once the object is in (default: unmap it at once). Tearing down 100 MB of
   * page tables is ~5 ms of a core, which the reader being woken wants more.
   */
  release?: (mapping: SharedMapping) => void;
  /** The holder's name, for messages. */
  peer: string;
}

const READ_BYTES = 1024 * 1024;
const MAX_HEAD_BYTES = 16 * 1024;
/** Socket buffers for bulk transfers: 4 MiB (the usual net.core.[wr]mem_max) instead of ~200 KiB. */
const BULK_SOCKET_BYTES = 4 * 1024 * 1024;

export function fetchInto(spec: FetchSpec): Promise<void> {
  if (spec.mapping) return fetchMapped(spec);
  const { file, size } = spec;
  return new Promise<void>((resolve, reject) => {
    let fd: number | undefined;
    let settled = false;
    let head: Buffer | undefined = Buffer.alloc(0); // response head until its blank line
    let pos = 0;
    const closeFd = () => {
      if (fd === undefined) return;
      try {
        fs.closeSync(fd);
      } catch {
        /* already closed */
      }
      fd = undefined;
    };
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      const opened = fd !== undefined;
      closeFd();
      if (opened || spec.reuse) {
        try {
          fs.unlinkSync(file);
        } catch {
          /* already gone */
        }
      }
      socket.destroy();
      reject(err);
    };
    const body = (buf: Uint8Array, start: number, end: number) => {
      if (end <= start) return;
      if (pos + (end - start) > size) return fail(new Error(`node ${spec.peer} sent more than the ${size} bytes of the object`));
      let o = start;
      while (o < end) o += fs.writeSync(fd!, buf, o, end - o, pos + (o - start));
      pos += end - start;
      if (pos === size) {
        settled = true;
        // A reused file may be longer: cut it, so no byte of its previous object stays readable.
        if (spec.reuse) fs.ftruncateSync(fd!, size);
        closeFd();
        socket.destroy();
        resolve();
      }
    };
    const socket = connectHolder(spec, {
      buffer: Buffer.allocUnsafe(READ_BYTES),
      callback: (n: number, buf: Uint8Array) => {
        if (settled) return false;
        try {
          if (!head) {
            body(buf, 0, n);
            return !settled;
          }
          head = Buffer.concat([head, buf.subarray(0, n)]);
          const h = readHead(spec, head, size, false);
          if (typeof h === "string") {
            fail(new Error(h));
            return false;
          }
          if (!h) return true;
          head = undefined;
          fd = fs.openSync(file, spec.reuse ? "r+" : "w", 0o600);
          spec.onStart?.();
          body(h.rest, 0, h.rest.length); // what came with the head is already body
        } catch (e) {
          fail(e as Error);
        }
        return !settled;
      },
    });
    socket.setTimeout(spec.stallMs, () => fail(new Error(`node ${spec.peer} sent nothing for ${spec.stallMs / 1000} s (${pos} of ${size} bytes arrived)`)));
    socket.on("error", (e) => fail(new Error(`fetching from node ${spec.peer}: ${e.message}`)));
    socket.on("close", () => fail(new Error(`the transfer from node ${spec.peer} was cut after ${pos} of ${size} bytes`)));
  });
}

function request(spec: FetchSpec, range?: [number, number]): string {
  const r = range ? `range: bytes=${range[0]}-${range[0] + range[1] - 1}\r\n` : "";
  return `GET ${spec.path} HTTP/1.1\r\nhost: ${spec.host}:${spec.port}\r\nauthorization: Bearer ${spec.token}\r\n${r}connection: close\r\n\r\n`;
}

/**
 * The response read so far (`all`, its own copy, not the reused read buffer): undefined while
 * the head's blank line has not come, a sentence when the answer is not the expected one, else
 * the body bytes that came with the head.
 */
function readHead(spec: FetchSpec, all: Buffer, length: number, ranged: boolean): { rest: Buffer } | string | undefined {
  const end = all.indexOf("\r\n\r\n");
  if (end < 0) return all.length > MAX_HEAD_BYTES ? `node ${spec.peer} sent no valid response` : undefined;
  const lines = all.toString("latin1", 0, end).split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1];
  const headers = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  if (status !== (ranged ? "206" : "200")) return `node ${spec.peer} answered ${status ?? "garbage"} for ${spec.path}`;
  if (Number(headers.get("content-length")) !== length) {
    return `node ${spec.peer} announced ${headers.get("content-length") ?? "no"} bytes for ${ranged ? "a range" : "an object"} of ${length}`;
  }
  const rest = all.subarray(end + 4);
  if (rest.length > length) return `node ${spec.peer} sent more than the ${length} bytes of the object`;
  return { rest };
}

/**
 * A connection to the holder (its Unix object socket or host:port) that asks for the object,
 * or a range of it, and raises the receive buffer for the bulk that follows.
 */
function connectHolder(spec: FetchSpec, onread: net.OnReadOpts, range?: [number, number]): net.Socket {
  const nat = native();
  const socket = net.connect({ ...(spec.unixPath ? { path: spec.unixPath } : { host: spec.host, port: spec.port }), onread });
  if (!spec.unixPath) socket.setNoDelay(true);
  socket.on("connect", () => {
    socket.write(request(spec, range));
    const sfd = nat ? socketFd(socket) : undefined;
    if (sfd !== undefined) nat!.socketBuffers(sfd, 0, BULK_SOCKET_BYTES);
  });
  return socket;
}

/** Objects from this size up are fetched in PARALLEL_RANGES ranges at once (a core each, 2-4). */
const PARALLEL_MIN_BYTES = 16 * 1024 * 1024;
const PARALLEL_RANGES = Math.max(2, Math.min(4, os.availableParallelism()));

/**
 * Into a premade mapping (native helpers): the object in PARALLEL_RANGES ranges over as many
 * connections, each read by recvInto on the thread pool straight into the file's pages, so
 * the receiving copies run on several cores while the holder's sendfile copies nothing.
 * Node reads each response's head, then stops reading that socket. The mapping is unmapped
 * once every range is done, and on any failure the file is removed.
 */
function fetchMapped(spec: FetchSpec): Promise<void> {
  const { file, size } = spec;
  const nat = native();
  const mapping = spec.mapping!;
  if (!nat || !spec.reuse || nat.mappingSize(mapping) < size) return Promise.reject(new Error("bug: a premade mapping that cannot take the object"));
  const drop = (err: Error) => {
    nat.unmap(mapping, true);
    fs.rmSync(file, { force: true });
    return Promise.reject(err);
  };
  try {
    // A reused file may be longer: cut it, so no byte of its previous object stays readable.
    fs.truncateSync(file, size);
  } catch (e) {
    return drop(e as Error);
  }
  const parts = size >= PARALLEL_MIN_BYTES ? PARALLEL_RANGES : 1;
  // Range boundaries on page boundaries: no page is written by two threads.
  const step = Math.ceil(size / parts / 4096) * 4096;
  return new Promise<void>((resolve, reject) => {
    let pending = parts;
    let failed: Error | undefined;
    const sockets: net.Socket[] = [];
    const partDone = (err?: Error) => {
      if (err && !failed) {
        failed = err;
        for (const s of sockets) s.destroy(); // ranges being read natively end when their bytes are in
      }
      if (--pending > 0) return;
      // Every range is done: no thread writes into the mapping any more.
      if (failed) drop(failed).catch(reject);
      else {
        if (spec.release) spec.release(mapping);
        else nat.unmap(mapping, true);
        resolve();
      }
    };
    for (let i = 0; i < parts; i++) {
      const start = i * step;
      const length = Math.min(size, start + step) - start;
      sockets.push(fetchRange(spec, nat, mapping, start, length, parts > 1, partDone));
    }
  });
}

/** One range of fetchMapped; `done` is called exactly once, after its last write into `mapping`. */
function fetchRange(spec: FetchSpec, nat: NativeHelpers, mapping: SharedMapping, start: number, length: number, ranged: boolean, done: (err?: Error) => void): net.Socket {
  let head = Buffer.alloc(0);
  let finished = false;
  let native = false; // recvInto owns the socket's reading
  let got = 0;
  const finish = (err?: Error) => {
    if (finished) return;
    finished = true;
    socket.destroy();
    done(err);
  };
  const socket = connectHolder(
    spec,
    {
      buffer: Buffer.allocUnsafe(64 * 1024),
      callback: (n: number, buf: Uint8Array) => {
        if (finished || native) return false;
        head = Buffer.concat([head, buf.subarray(0, n)]);
        const h = readHead(spec, head, length, ranged);
        if (typeof h === "string") {
          finish(new Error(h));
          return false;
        }
        if (!h) return true;
        nat.copyInto(mapping, start, h.rest);
        got = h.rest.length;
        if (got === length) {
          finish();
          return false;
        }
        // Returning false stops Node's reading of this socket; recvInto reads the rest.
        native = true;
        socket.setTimeout(0);
        nat.recvInto(socketFd(socket)!, mapping, start + got, length - got, spec.stallMs, (err, more) => {
          got += more;
          if (!err) return finish();
          const why = err.code === "ETIMEDOUT" ? `sent nothing for ${spec.stallMs / 1000} s` : `was cut`;
          finish(new Error(`the transfer from node ${spec.peer} ${why} after ${got} of ${length} bytes${ranged ? ` (bytes ${start}- of ${spec.size})` : ""}`));
        });
        return false;
      },
    },
    ranged ? [start, length] : undefined,
  );
  socket.setTimeout(spec.stallMs, () => finish(new Error(`node ${spec.peer} sent nothing for ${spec.stallMs / 1000} s (${got} of ${length} bytes arrived)`)));
  // While recvInto reads, its own result decides (it holds a dup of the socket).
  socket.on("error", (e) => native || finish(new Error(`fetching from node ${spec.peer}: ${e.message}`)));
  socket.on("close", () => native || finish(new Error(`the transfer from node ${spec.peer} was cut after ${got} of ${length} bytes`)));
  return socket;
}

const SEND_BYTES = 4 * 1024 * 1024;

let ownHostKey: string | undefined;
/**
 * The identity of this host: its kernel's boot id and its hostname. Agents in the same kernel
 * but under another hostname (a network namespace posing as another machine, a container)
 * count as other hosts and use TCP.
 */
export function hostKey(): string {
  if (ownHostKey !== undefined) return ownHostKey;
  let boot = "";
  try {
    boot = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    /* not Linux: no shared sockets */
  }
  return (ownHostKey = boot ? `${boot}/${os.hostname()}` : "");
}

/** The peer's object socket when it runs on this host (and the socket is there), else undefined. */
export function sameHostSocket(self: NodeView, peer: NodeView): string | undefined {
  if (!peer.objSock || !peer.hostKey || peer.hostKey !== (self.hostKey ?? hostKey())) return undefined;
  return fs.existsSync(peer.objSock) ? peer.objSock : undefined;
}

/**
 * Answer a peer's GET /object/<id> with the object's file. With the native helpers the file is
 * pinned (a hard link in the store's pins folder, so the store does not recycle it under the
 * transfer) and handed to the socket with sendfile(2) on the thread pool; otherwise sendFile
 * below reads it into JavaScript buffers. Throws (before anything is sent) when the file is
 * gone, so the caller can answer 404.
 */
export function serveObjectFile(req: http.IncomingMessage, res: http.ServerResponse, file: string, size: number, stallMs: number, done: (err?: Error) => void): void {
  const range = parseRange(req.headers.range, size);
  if (range === null) {
    res.writeHead(416, { "content-range": `bytes */${size}` }).end(`the range ${req.headers.range} is not within the object's ${size} bytes\n`);
    return done();
  }
  const [offset, length] = range ?? [0, size];
  const status = range ? `206 Partial Content` : `200 OK`;
  const headers: Record<string, string> = { "content-type": "application/octet-stream", "content-length": String(length) };
  if (range) headers["content-range"] = `bytes ${offset}-${offset + length - 1}/${size}`;
  const nat = native();
  const sock = req.socket;
  const sfd = nat && length > 0 ? socketFd(sock) : undefined;
  if (!nat || sfd === undefined) {
    const fd = fs.openSync(file, "r");
    res.writeHead(range ? 206 : 200, headers);
    sendFile(res, fd, length, done, offset);
    return;
  }
  const pin = pinStoredFile(file);
  if (!pin) fs.accessSync(file, fs.constants.R_OK);
  const src = pin ?? file;
  // The response head goes through Node (its write callback: on the wire before the body);
  // the http.ServerResponse is never used, so Node writes nothing after it.
  const head = `HTTP/1.1 ${status}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}connection: close\r\n\r\n`;
  const ended = (err?: Error) => {
    if (pin) fs.unlink(pin, () => {});
    done(err);
  };
  sock.write(head, (werr) => {
    if (werr) return ended(werr);
    nat.socketBuffers(sfd, BULK_SOCKET_BYTES, 0);
    nat.sendFile(sfd, src, offset, length, stallMs, (err, sent) => {
      if (err) {
        sock.destroy();
        return ended(new Error(`sending the object stopped after ${sent} of ${length} bytes: ${err.message}`));
      }
      sock.end();
      ended();
    });
  });
}

/** `bytes=a-b` within an object of `size` bytes: [offset, length]; undefined without a range; null when invalid. */
export function parseRange(h: string | undefined, size: number): [number, number] | undefined | null {
  if (h === undefined) return undefined;
  const m = /^bytes=(\d+)-(\d+)$/.exec(h.trim());
  if (!m) return null;
  const a = Number(m[1]);
  const b = Number(m[2]);
  if (!(a <= b && b < size)) return null;
  return [a, b - a + 1];
}

/**
 * The sending end: the object's file into the response, read with large reads (libuv's thread
 * pool, so the agent's loop never waits on a copy) into two reused buffers, the next read
 * running while the previous chunk goes out: no Buffer allocated per chunk, no stream layer.
 * `done` gets an error when the file is shorter than `size` or the peer went away.
 */
export function sendFile(res: NodeJS.WritableStream & { destroy(e?: Error): void; on(ev: "close", f: () => void): unknown }, fd: number, size: number, done: (err?: Error) => void, offset = 0): void {
  const bufs = [Buffer.allocUnsafe(Math.max(1, Math.min(SEND_BYTES, size))), Buffer.allocUnsafe(Math.max(1, Math.min(SEND_BYTES, size)))];
  const free = [true, true];
  let off = 0;
  let reading = false;
  let writing = 0;
  let finished = false;
  const finish = (err?: Error) => {
    if (finished) return;
    finished = true;
    fs.close(fd, () => {});
    if (err) res.destroy(err);
    done(err);
  };
  const pump = () => {
    if (finished) return;
    if (off >= size) {
      if (!reading && writing === 0) {
        finished = true;
        fs.close(fd, () => {});
        res.end();
        done();
      }
      return;
    }
    if (reading) return;
    const i = free[0] ? 0 : free[1] ? 1 : -1;
    if (i < 0) return;
    const b = bufs[i]!;
    const len = Math.min(b.length, size - off);
    const at = off;
    reading = true;
    free[i] = false;
    fs.read(fd, b, 0, len, offset + at, (err, n) => {
      reading = false;
      if (finished) return;
      if (err || n !== len) return finish(err ?? new Error(`the object's file holds ${offset + at + n} of ${offset + size} bytes`));
      off += n;
      writing++;
      res.write(n === b.length ? b : b.subarray(0, n), (werr?: Error | null) => {
        writing--;
        free[i] = true;
        if (werr) return finish(werr);
        pump();
      });
      pump();
    });
  };
  res.on("close", () => {
    if (!finished && (off < size || writing > 0)) finish(new Error("the peer went away"));
  });
  pump();
}
