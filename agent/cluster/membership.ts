// Cluster membership. The head keeps the table of nodes (registered over their links, kept
// alive by heartbeats, declared dead after a configurable silence) and broadcasts the
// resource view to every node; nodes dial the head, register, send heartbeats and
// reconnect by themselves when the head goes away.
import http from "node:http";
import crypto from "node:crypto";
import { WebSocketServer } from "ws";
import type { NodeView } from "../../src/protocol/cluster.js";
import { Link, dial, LINK_MAX_FRAME } from "./link.js";

export const HEARTBEAT_MS = Number(process.env.TRAY_HEARTBEAT_MS ?? 500);
export const NODE_TIMEOUT_MS = Number(process.env.TRAY_NODE_TIMEOUT_MS ?? 5000);

export function tokenMatches(req: http.IncomingMessage, token: string): boolean {
  const auth = req.headers.authorization ?? "";
  const given = Buffer.from(auth.startsWith("Bearer ") ? auth.slice(7) : "");
  const want = Buffer.from(token);
  return given.length === want.length && crypto.timingSafeEqual(given, want);
}

/** Accept peer links on `/peer` of an HTTP server (the head's API server, or a node's own). */
export function acceptPeers(server: http.Server, token: string, onLink: (l: Link) => void): (req: http.IncomingMessage, socket: any, head: Buffer) => boolean {
  const wss = new WebSocketServer({ noServer: true, maxPayload: LINK_MAX_FRAME, perMessageDeflate: false });
  return (req, socket, head) => {
    if (!(req.url ?? "").startsWith("/peer")) return false;
    if (!tokenMatches(req, token)) {
      socket.end("HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n\r\nmissing or wrong cluster token\n");
      return true;
    }
    socket.setNoDelay?.(true);
    wss.handleUpgrade(req, socket, head, (ws) => onLink(new Link(ws)));
    return true;
  };
}

/** The head's node table. */
export class NodeTable {
  readonly nodes = new Map<string, NodeView>();
  readonly links = new Map<string, Link>();
  private timer?: NodeJS.Timeout;
  onDead: (nodeId: string) => void = () => {};
  onChange: () => void = () => {};

  start(): void {
    this.timer = setInterval(() => this.sweep(), HEARTBEAT_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  register(view: NodeView, link?: Link): void {
    // A node that comes back under its name replaces its dead record.
    for (const [id, n] of this.nodes) if (!n.alive && n.name === view.name && id !== view.nodeId) this.nodes.delete(id);
    view.alive = true;
    view.lastSeen = Date.now();
    this.nodes.set(view.nodeId, view);
    if (link) this.links.set(view.nodeId, link);
    this.onChange();
  }

  heartbeat(nodeId: string, f: Partial<NodeView>): boolean {
    const n = this.nodes.get(nodeId);
    if (!n) return false;
    Object.assign(n, f);
    n.lastSeen = Date.now();
    if (!n.alive) {
      n.alive = true;
      this.onChange();
    }
    return true;
  }

  markDead(nodeId: string): void {
    const n = this.nodes.get(nodeId);
    if (!n || !n.alive) return;
    n.alive = false;
    this.links.get(nodeId)?.close();
    this.links.delete(nodeId);
    this.onDead(nodeId);
    this.onChange();
  }

  private sweep(): void {
    const now = Date.now();
    for (const n of this.nodes.values()) {
      if (n.alive && !n.isHead && now - n.lastSeen > NODE_TIMEOUT_MS) this.markDead(n.nodeId);
    }
    this.broadcast();
  }

  view(): NodeView[] {
    return [...this.nodes.values()];
  }

  broadcast(): void {
    const nodes = this.view();
    for (const l of this.links.values()) l.send({ t: "view", nodes });
  }
}

/**
 * A node's link to the head, re-dialled with backoff whenever it drops (a restarted head
 * gets every node back without anyone doing anything).
 */
export class HeadConnection {
  link?: Link;
  private stopped = false;
  private hbTimer?: NodeJS.Timeout;
  onLink: (l: Link) => void = () => {};
  onLost: () => void = () => {};

  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly self: () => NodeView,
    private readonly heartbeat: () => { available: Record<string, number>; queued: number; store?: unknown; pending?: unknown[]; workers?: number },
    /** Named actors this node hosts: a restarted head learns its name registry back from them. */
    private readonly named: () => Array<{ key: string; id: string; c: string }> = () => [],
  ) {}

  async start(): Promise<void> {
    let delay = 100;
    let lastError = "";
    while (!this.stopped) {
      let link: Link | undefined;
      try {
        const l = (link = await dial(this.url, this.token));
        l.peer = "head";
        this.link = l;
        let joined = false;
        l.onClose = () => {
          if (this.link === l) this.link = undefined;
          if (!joined) return; // the register below fails and this loop dials again
          clearInterval(this.hbTimer);
          this.onLost();
          if (!this.stopped) setTimeout(() => void this.start(), 200);
        };
        // Handled from before it registers: the head sends on the link as soon as it has
        // registered this node — its view of the cluster first, in the same frame as the
        // register's reply. Wired only after the reply, the node dropped that view and knew
        // no other node (the head included) until the head's next periodic broadcast; what it
        // sent to one meanwhile (the result of a forwarded actor call) was dropped.
        this.onLink(l);
        await l.request({ t: "register", node: this.self(), named: this.named() });
        joined = true;
        this.hbTimer = setInterval(() => {
          const nodeId = this.self().nodeId;
          l.send({ t: "hb", nodeId, ...this.heartbeat() });
        }, HEARTBEAT_MS);
        this.hbTimer.unref();
        return;
      } catch (e) {
        if (link && !link.closed) link.close(); // not left open beside the next try
        const msg = (e as Error).message;
        if (/401/.test(msg)) {
          // A wrong token never gets better by retrying: say so and stop.
          console.error(`[agent] the head at ${this.url} refused this node's token; check the cluster token file`);
          process.exit(3);
        }
        if (msg !== lastError) console.error(`[agent] cannot reach the head at ${this.url} (${msg}); retrying`);
        lastError = msg;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.hbTimer);
    this.link?.close();
  }
}
