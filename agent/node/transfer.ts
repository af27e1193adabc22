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
import path from "node:path";
import type { NodeView } from "../../src/protocol/cluster.js";
import { native, socketFd, type NativeHelpers } from "../../src/runtime/native.js";
import { PIN_DIR } from "../../src/runtime/recycle.js";

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
  mapping?: ArrayBuffer;
  /** The holder's name, for messages. */
  peer: string;
}

const READ_BYTES = 1024 * 1024;
const MAX_HEAD_BYTES = 16 * 1024;
/** Socket buffers for bulk transfers: 4 MiB (the usual net.core.[wr]mem_max) instead of ~200 KiB. */
const BULK_SOCKET_BYTES = 4 * 1024 * 1024;
/** Most bytes one read may land in a mapped destination. */
const MAP_READ_BYTES = 4 * 1024 * 1024;

export function fetchInto(spec: FetchSpec): Promise<void> {
  const { file, size } = spec;
  const nat = native();
  if (spec.mapping && (!nat || !spec.reuse || spec.mapping.byteLength < size)) {
    return Promise.reject(new Error("bug: a premade mapping that cannot take the object"));
  }
  return new Promise<void>((resolve, reject) => {
    let fd: number | undefined;
    let settled = false;
    let head: Buffer | undefined = Buffer.alloc(0); // response head until its blank line
    let pos = 0;
    const scratch = Buffer.allocUnsafe(READ_BYTES);
    // With a premade mapping, reads land in the file's pages (buffer() below); bytes read
    // together with the response head are copied in.
    let mapped = spec.mapping;
    const dest = mapped && new Uint8Array(mapped, 0, size);
    const unmap = () => {
      if (!mapped) return;
      // Unmapping 100 MB takes ~5 ms: on a thread of its own.
      nat!.unmap(mapped, true);
      mapped = undefined;
    };
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
      unmap();
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
      if (dest) {
        if (buf === scratch) dest.set(scratch.subarray(start, end), pos);
      } else {
        let o = start;
        while (o < end) o += fs.writeSync(fd!, buf, o, end - o, pos + (o - start));
      }
      pos += end - start;
      if (pos === size) {
        settled = true;
        unmap();
        // A reused file may be longer: cut it, so no byte of its previous object stays readable
        // (a mapped one was cut when it was opened).
        if (spec.reuse && !dest) fs.ftruncateSync(fd!, size);
        closeFd();
        socket.destroy();
        resolve();
      }
    };
    const onHead = (buf: Buffer, n: number): number | undefined => {
      head = Buffer.concat([head!, buf.subarray(0, n)]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) fail(new Error(`node ${spec.peer} sent no valid response`));
        return undefined;
      }
      const lines = head.toString("latin1", 0, end).split("\r\n");
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1];
      const headers = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      if (status !== "200") {
        fail(new Error(`node ${spec.peer} answered ${status ?? "garbage"} for ${spec.path}`));
        return undefined;
      }
      if (Number(headers.get("content-length")) !== size) {
        fail(new Error(`node ${spec.peer} announced ${headers.get("content-length") ?? "no"} bytes for an object of ${size}`));
        return undefined;
      }
      // The rest of what was read is already body: it starts at end + 4 in `head`.
      const already = head.length - (end + 4);
      head = undefined;
      fd = fs.openSync(file, spec.reuse ? "r+" : "w", 0o600);
      // A mapped file is cut to size now: its pages past the object are never written.
      if (dest) fs.ftruncateSync(fd, size);
      else spec.onStart?.();
      return n - already;
    };
    const socket = net.connect({
      ...(spec.unixPath ? { path: spec.unixPath } : { host: spec.host, port: spec.port }),
      onread: {
        // Once the head is read, reads land in the mapped file's pages directly.
        buffer: () => (dest && !head && !settled ? dest.subarray(pos, Math.min(size, pos + MAP_READ_BYTES)) : scratch),
        callback: (n: number, buf: Uint8Array) => {
          if (settled) return false;
          const b = buf as Buffer;
          try {
            let start = 0;
            if (head) {
              const s = onHead(b, n);
              if (s === undefined) return !settled;
              start = s;
            }
            body(b, start, n);
          } catch (e) {
            fail(e as Error);
          }
          return !settled;
        },
      },
    });
    if (!spec.unixPath) socket.setNoDelay(true);
    socket.setTimeout(spec.stallMs, () => fail(new Error(`node ${spec.peer} sent nothing for ${spec.stallMs / 1000} s (${pos} of ${size} bytes arrived)`)));
    socket.on("connect", () => {
      socket.write(`GET ${spec.path} HTTP/1.1\r\nhost: ${spec.host}:${spec.port}\r\nauthorization: Bearer ${spec.token}\r\nconnection: close\r\n\r\n`);
      const sfd = nat ? socketFd(socket) : undefined;
      if (sfd !== undefined) nat!.socketBuffers(sfd, 0, BULK_SOCKET_BYTES);
    });
    socket.on("error", (e) => fail(new Error(`fetching from node ${spec.peer}: ${e.message}`)));
    socket.on("close", () => fail(new Error(`the transfer from node ${spec.peer} was cut after ${pos} of ${size} bytes`)));
  });
}

const SEND_BYTES = 4 * 1024 * 1024;
let sendSeq = 0;

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
  const nat = native();
  const sock = req.socket;
  const sfd = nat && size > 0 ? socketFd(sock) : undefined;
  if (!nat || sfd === undefined) {
    const fd = fs.openSync(file, "r");
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(size) });
    sendFile(res, fd, size, done);
    return;
  }
  const pinDir = path.join(path.dirname(file), PIN_DIR);
  let src = file;
  let pin: string | undefined;
  if (fs.existsSync(pinDir)) {
    pin = path.join(pinDir, `${process.pid}.s${++sendSeq}`);
    fs.linkSync(file, pin);
    src = pin;
  } else fs.accessSync(file, fs.constants.R_OK);
  sendPinned(nat, sock, sfd, src, size, stallMs, (err) => {
    if (pin) fs.unlink(pin, () => {});
    done(err);
  });
}

function sendPinned(nat: NativeHelpers, sock: net.Socket, sfd: number, src: string, size: number, stallMs: number, done: (err?: Error) => void): void {
  // The response head goes through Node (its write callback: on the wire before the body);
  // the http.ServerResponse is never used, so Node writes nothing after it.
  const head = `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${size}\r\nconnection: close\r\n\r\n`;
  sock.write(head, (werr) => {
    if (werr) return done(werr);
    nat.socketBuffers(sfd, BULK_SOCKET_BYTES, 0);
    nat.sendFile(sfd, src, 0, size, stallMs, (err, sent) => {
      if (err) {
        sock.destroy();
        return done(new Error(`sending the object stopped after ${sent} of ${size} bytes: ${err.message}`));
      }
      sock.end();
      done();
    });
  });
}

/**
 * The sending end: the object's file into the response, read with large reads (libuv's thread
 * pool, so the agent's loop never waits on a copy) into two reused buffers, the next read
 * running while the previous chunk goes out: no Buffer allocated per chunk, no stream layer.
 * `done` gets an error when the file is shorter than `size` or the peer went away.
 */
export function sendFile(res: NodeJS.WritableStream & { destroy(e?: Error): void; on(ev: "close", f: () => void): unknown }, fd: number, size: number, done: (err?: Error) => void): void {
  const bufs = [Buffer.allocUnsafe(Math.min(SEND_BYTES, size)), Buffer.allocUnsafe(Math.min(SEND_BYTES, size))];
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
    fs.read(fd, b, 0, len, at, (err, n) => {
      reading = false;
      if (finished) return;
      if (err || n !== len) return finish(err ?? new Error(`the object's file holds ${at + n} of ${size} bytes`));
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
