// The receiving end of one object transfer between nodes (see Distributed.fetchObject): a GET
// of /object/<id> on the holder's peer port, read straight off the TCP socket into one reused
// 1 MiB buffer (`onread`: no Buffer per 64 KiB read, no HTTP body stream) and written into the
// store file with one write(2) per read. Node's HTTP client cost about half the throughput
// here. A transfer that is cut, stalls, or brings too few or too many bytes removes its file:
// no half object stays behind, and a process reading the file as it grows (StoredLoc.g) sees
// it go and asks again.
import fs from "node:fs";
import net from "node:net";

export interface FetchSpec {
  host: string;
  port: number;
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
  /** Runs once the file exists and the body flows (the status was 200). */
  onStart?: () => void;
  /** The holder's name, for messages. */
  peer: string;
}

const READ_BYTES = 1024 * 1024;
const MAX_HEAD_BYTES = 16 * 1024;

export function fetchInto(spec: FetchSpec): Promise<void> {
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
    const body = (buf: Buffer, start: number, end: number) => {
      if (end <= start) return;
      if (pos + (end - start) > size) return fail(new Error(`node ${spec.peer} sent more than the ${size} bytes of the object`));
      let o = start;
      while (o < end) o += fs.writeSync(fd!, buf, o, end - o, pos + (o - start));
      pos += end - start;
      if (pos === size) {
        // A reused file may be longer: cut it, so no byte of its previous object stays readable.
        if (spec.reuse) fs.ftruncateSync(fd!, size);
        settled = true;
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
      spec.onStart?.();
      return n - already;
    };
    const socket = net.connect({
      host: spec.host,
      port: spec.port,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BYTES),
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
    socket.setNoDelay(true);
    socket.setTimeout(spec.stallMs, () => fail(new Error(`node ${spec.peer} sent nothing for ${spec.stallMs / 1000} s (${pos} of ${size} bytes arrived)`)));
    socket.on("connect", () => {
      socket.write(`GET ${spec.path} HTTP/1.1\r\nhost: ${spec.host}:${spec.port}\r\nauthorization: Bearer ${spec.token}\r\nconnection: close\r\n\r\n`);
    });
    socket.on("error", (e) => fail(new Error(`fetching from node ${spec.peer}: ${e.message}`)));
    socket.on("close", () => fail(new Error(`the transfer from node ${spec.peer} was cut after ${pos} of ${size} bytes`)));
  });
}

const SEND_BYTES = 4 * 1024 * 1024;

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
