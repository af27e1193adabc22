// The CLI reaches the head's API through an SSH tunnel (ssh2 forwardOut to the head's private
// address), so the API port never has to face the internet. openHeadTunnel(state) gives a
// `createConnection` for HeadClient.connect / ws: each call opens one forwarded channel.
import { Duplex } from "node:stream";
import { UserError } from "../errors.js";
import type { ClusterState } from "../launcher/state.js";
import type { SshConnection } from "../ssh/client.js";
import { connectNode, headNode } from "../ssh/cluster.js";

export interface HeadTunnel {
  /** A stream to the head's API, usable as ws's / http's createConnection. */
  createConnection: () => Duplex;
  /** ws://host:port of the head API as the head sees it (for the WebSocket URL). */
  url: string;
  close(): Promise<void>;
}

/**
 * A Duplex returned synchronously that becomes the forwarded channel once it opens. It also
 * answers the net.Socket methods http/ws call on their socket (setNoDelay, setTimeout, ...).
 */
export class TunnelSocket extends Duplex {
  private ch?: Duplex;
  private queued: Array<{ chunk: Buffer; cb: (err?: Error | null) => void }> = [];
  private ended = false;
  remoteAddress: string;
  remotePort: number;
  connecting = true;

  constructor(open: Promise<Duplex>, host: string, port: number) {
    super({ allowHalfOpen: false });
    this.remoteAddress = host;
    this.remotePort = port;
    open.then(
      (ch) => {
        if (this.destroyed) { ch.destroy(); return; }
        this.ch = ch;
        this.connecting = false;
        ch.on("data", (b: Buffer) => { if (!this.push(b)) ch.pause(); });
        ch.on("end", () => this.push(null));
        ch.on("close", () => { if (!this.destroyed) this.destroy(); });
        ch.on("error", (e: Error) => this.destroy(e));
        for (const q of this.queued.splice(0)) ch.write(q.chunk, q.cb);
        if (this.ended) ch.end();
        this.emit("connect");
        this.emit("ready");
      },
      (err: Error) => this.destroy(err),
    );
  }

  override _read(): void {
    this.ch?.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.ch) this.ch.write(chunk, cb);
    else this.queued.push({ chunk, cb });
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.ch) this.ch.end();
    else this.ended = true;
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.ch?.destroy();
    cb(err);
  }

  setNoDelay(): this { return this; }
  setKeepAlive(): this { return this; }
  setTimeout(_ms: number, cb?: () => void): this { if (cb) this.once("timeout", cb); return this; }
  ref(): this { return this; }
  unref(): this { return this; }
  address(): { address: string; family: string; port: number } { return { address: "127.0.0.1", family: "IPv4", port: 0 }; }
}

/** Where the head's API listens, as recorded by `tray up`. */
export function headApiAddress(state: ClusterState): { host: string; port: number } {
  if (!state.head) throw new UserError(`Cluster "${state.name}" has no head address recorded; run \`tray up\` again.`);
  return { host: state.head.apiHost, port: state.head.apiPort };
}

/** A tunnel over an existing connection to the head (used by `tray up` itself). */
export function tunnelOver(conn: SshConnection, host: string, port: number): HeadTunnel {
  return {
    createConnection: () => new TunnelSocket(conn.forwardOut(host, port), host, port),
    url: `ws://${host}:${port}/`,
    close: async () => {},
  };
}

export async function openHeadTunnel(state: ClusterState): Promise<HeadTunnel & { createConnection: () => Duplex }> {
  const { host, port } = headApiAddress(state);
  const head = headNode(state);
  const conn = await connectNode(state, head);
  return {
    createConnection: () => new TunnelSocket(conn.forwardOut(host, port), host, port),
    url: `ws://${host}:${port}/`,
    close: async () => conn.close(),
  };
}
