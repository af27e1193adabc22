// Length-prefixed frames over a byte stream (Unix socket). One frame carries an array of
// messages: writers queue messages and flush once per turn of the event loop, so a burst of
// 10,000 submits costs a handful of syscalls, not 10,000.
import net, { type Socket } from "node:net";
import { Packr, RESERVE_START_SPACE, Unpackr } from "msgpackr";
import { native, socketFd } from "../runtime/native.js";

// One codec for every internal message. Records off: messages are small and heterogenous;
// maps decode to plain objects for speed.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export function encodeMessages(msgs: unknown[]): Uint8Array {
  return packr.pack(msgs);
}

export function decodeMessages(buf: Uint8Array): unknown[] {
  const v = unpackr.unpack(buf);
  if (!Array.isArray(v)) throw new Error("frame payload is not an array of messages");
  return v;
}

/** Frames up to this size may skip Node's stream (FrameWriter.writeNow). */
const WRITE_NOW_MAX_BYTES = 64 * 1024;

/** Largest frame a peer may send; bigger ones are refused (the connection is closed). */
export const MAX_FRAME_BYTES = 512 * 1024 * 1024;

/** Reassembles frames from chunks and hands decoded message arrays to `onMessages`. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private need = -1;
  constructor(
    private readonly onMessages: (msgs: unknown[]) => void,
    private readonly onError: (err: Error) => void,
  ) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.have += chunk.length;
    for (;;) {
      if (this.need < 0) {
        if (this.have < 4) return;
        const head = this.take(4);
        this.need = head.readUInt32LE(0);
        if (this.need > MAX_FRAME_BYTES) {
          this.onError(new Error(`frame of ${this.need} bytes exceeds the ${MAX_FRAME_BYTES}-byte limit`));
          this.chunks = [];
          this.have = 0;
          return;
        }
      }
      if (this.have < this.need) return;
      const body = this.take(this.need);
      this.need = -1;
      let msgs: unknown[];
      try {
        msgs = decodeMessages(body);
      } catch (e) {
        this.onError(e as Error);
        continue;
      }
      this.onMessages(msgs);
    }
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length === n) {
      this.chunks.shift();
      this.have -= n;
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      this.have -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.have -= n;
    return out;
  }
}

/**
 * Queues messages for one socket and writes them as one frame per burst of sends.
 * `send` never blocks; `flushNow` is for the rare message that must leave before exit.
 */
export class FrameWriter {
  private queue: unknown[] = [];
  private scheduled = false;
  constructor(private readonly socket: Socket) {}

  send(msg: unknown): void {
    this.queue.push(msg);
    if (!this.scheduled) {
      this.scheduled = true;
      // After the code that is running now (a whole frame of messages, or a loop of
      // .remote() calls) and before any I/O: batches bursts without adding a loop turn.
      process.nextTick(this.flush);
    }
  }

  flush = (): void => {
    this.scheduled = false;
    if (this.queue.length === 0 || this.socket.destroyed) {
      this.queue = [];
      return;
    }
    const msgs = this.queue;
    this.queue = [];
    // One buffer, one write(2), no copy: msgpack leaves 4 bytes free in front for the length.
    // (The codec never writes over bytes it has handed out, so the write may finish later.)
    const frame = packr.pack(msgs, RESERVE_START_SPACE | 4) as Buffer;
    frame.writeUInt32LE(frame.length - 4, 0);
    if (!this.writeNow(frame)) this.socket.write(frame);
  };

  /**
   * A small frame goes out with one write(2) of its own (native helpers) when nothing of this
   * socket waits in Node's stream: Node's write costs a few µs of JavaScript per message (write
   * wraps, callbacks), paid on both ends of every one-at-a-time round trip. What the kernel does
   * not take at once goes through the stream after it, so the order stays.
   */
  private writeNow(frame: Buffer): boolean {
    if (frame.length > WRITE_NOW_MAX_BYTES) return false;
    const s = this.socket;
    if (s.writableLength !== 0 || s.connecting || s.destroyed || s.writableEnded) return false;
    const nat = native();
    const fd = nat && socketFd(s);
    if (fd === undefined) return false;
    const n = nat!.writeNow(fd, frame);
    if (n === frame.length) return true;
    if (n > 0) s.write(frame.subarray(n));
    return n > 0; // EAGAIN or an error: the stream's own write queues it or reports the error
  }

  flushNow(): void {
    this.flush();
  }
}

/** Node's read size for a socket; a frame larger than this arrives in several chunks. */
const READ_BUFFER_BYTES = 64 * 1024;

/**
 * Connect to a Unix socket whose incoming frames go straight to `reader`, past Node's Readable
 * machinery: Node reads into one reused buffer and calls back (`onread`), and each chunk is
 * copied out once (decoded messages keep views into what they were decoded from). A few µs per
 * message less than a 'data' listener, on the reading end of every one-at-a-time round trip.
 */
export function connectFrames(path: string, reader: FrameReader): Socket {
  const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  const callback = (n: number, buf: Uint8Array) => {
    reader.push(Buffer.from(buf.subarray(0, n)));
    return true;
  };
  return net.createConnection({ path, onread: { buffer, callback } } as net.NetConnectOpts);
}
