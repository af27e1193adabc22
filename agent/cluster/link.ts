// A link between two agents (node ↔ head, node ↔ node): one WebSocket carrying msgpack
// arrays of messages, flushed once per event-loop turn (many tasks or results per frame).
import WebSocket from "ws";
import { Packr, Unpackr } from "msgpackr";
import type { ClusterMsg } from "../../src/protocol/cluster.js";
import { validateClusterMessage } from "../../src/protocol/cluster.js";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export const LINK_MAX_FRAME = 1024 * 1024 * 1024;

export class Link {
  private queue: ClusterMsg[] = [];
  private scheduled = false;
  private rid = 0;
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  /** Node id of the agent at the other end (set once known). */
  peer?: string;
  closed = false;
  onMessage: (m: ClusterMsg, link: Link) => void = () => {};
  onClose: (link: Link) => void = () => {};

  constructor(readonly ws: WebSocket) {
    ws.binaryType = "nodebuffer";
    ws.on("message", (data: Buffer) => {
      let msgs: unknown;
      try {
        msgs = unpackr.unpack(data);
      } catch (e) {
        console.error(`[agent] dropped an undecodable frame from ${this.peer ?? "a peer"}: ${(e as Error).message}`);
        return;
      }
      if (!Array.isArray(msgs)) return;
      for (const m of msgs) {
        const problem = validateClusterMessage(m);
        if (problem) {
          console.error(`[agent] dropped a message from ${this.peer ?? "a peer"}: ${problem}`);
          continue;
        }
        const cm = m as ClusterMsg;
        if (cm.t === "rep") {
          const p = this.pending.get(cm.rid);
          if (p) {
            this.pending.delete(cm.rid);
            if (cm.err) p.reject(new Error(cm.err));
            else p.resolve(cm.value);
          }
          continue;
        }
        try {
          this.onMessage(cm, this);
        } catch (e) {
          console.error(`[agent] error handling "${cm.t}" from ${this.peer ?? "a peer"}:`, e);
        }
      }
    });
    ws.on("close", () => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new Error(`the link to ${this.peer ?? "a peer"} closed`));
      this.pending.clear();
      this.onClose(this);
    });
    ws.on("error", () => {});
  }

  send(m: ClusterMsg): void {
    if (this.closed) return;
    this.queue.push(m);
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flush);
    }
  }

  private flush = (): void => {
    this.scheduled = false;
    if (!this.queue.length || this.ws.readyState !== WebSocket.OPEN) return;
    const msgs = this.queue;
    this.queue = [];
    this.ws.send(packr.pack(msgs));
  };

  request<T>(m: ClusterMsg & { rid?: number }): Promise<T> {
    const rid = ++this.rid;
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new Error(`the link to ${this.peer ?? "a peer"} is closed`));
      this.pending.set(rid, { resolve, reject });
      this.send({ ...m, rid } as ClusterMsg);
    });
  }

  reply(rid: number, value: unknown, err?: string): void {
    this.send({ t: "rep", rid, value, err });
  }

  close(): void {
    this.flush(); // what was queued (a goodbye) still leaves
    this.closed = true;
    this.ws.close();
    setTimeout(() => this.ws.terminate(), 200).unref();
  }
}

/** Dial another agent: ws://host:port/peer with the cluster token. */
export function dial(url: string, token: string, timeoutMs = 5000): Promise<Link> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${token}` },
      maxPayload: LINK_MAX_FRAME,
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
    });
    ws.once("open", () => {
      (ws as any)._socket?.setNoDelay?.(true);
      resolve(new Link(ws));
    });
    ws.once("unexpected-response", (_req, res) => {
      ws.terminate();
      reject(new Error(res.statusCode === 401 ? `${url} refused the cluster token (401)` : `${url} answered HTTP ${res.statusCode}`));
    });
    ws.once("error", (e) => reject(e));
  });
}
