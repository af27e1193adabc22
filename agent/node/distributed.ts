// What a node agent does as part of a cluster: the view of every node, links to the head and
// to peers, forwarding tasks and actors to other nodes, pulling objects between stores, and
// keeping owners' reference counts and lineage right when nodes come and go. The head is on
// none of these paths except membership, named actors and job bundles.
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import crypto from "node:crypto";
import path from "node:path";
import type { NodeAgent, Task, Actor, Conn } from "./agent.js";
import type { ClusterMsg, NodeView, RemoteTask } from "../../src/protocol/cluster.js";
import type { StoredLoc, Tagged } from "../../src/protocol/values.js";
import type { ResolvedArg } from "../../src/protocol/local.js";
import type { ObjEntry } from "./objects.js";
import { encodeError } from "../../src/runtime/serialize.js";
import { Link, dial } from "../cluster/link.js";
import { HeadConnection, NodeTable, tokenMatches } from "../cluster/membership.js";
import { place, type Placement, type Strategy } from "./placement.js";
import { takeParkedFile } from "../../src/runtime/recycle.js";
import { fetchInto, sameHostSocket, serveObjectFile } from "./transfer.js";
import { MAP_MIN_BYTES, native, type SharedMapping } from "../../src/runtime/native.js";
import { subtract, type Resources } from "./resources.js";
import { envKeyOf } from "./pool.js";
import { BundleReservations, PG_STRATEGIES, PlacementGroups, rewriteDemand, type PgStrategy } from "./placement-groups.js";

const FETCH_STALL_MS = Number(process.env.TRAY_FETCH_STALL_MS) || 30_000;
/** How long messages wait for a node we have not heard of yet (see sendTo). */
const OUTBOX_UNKNOWN_MS = 5_000;
/** ...and for a node we cannot reach although it is alive. */
const OUTBOX_MAX_MS = 60_000;

const ownerLost = (id: string, node: string) =>
  `object ${id} was lost: it was owned by node ${node}, which died (objects made with put() and results owned by a dead node cannot be rebuilt)`;

type Subscriber = { notify(id: string, e: ObjEntry): void };

export class Distributed {
  readonly view = new Map<string, NodeView>();
  private readonly links = new Map<string, Link>();
  private readonly dialing = new Map<string, Promise<Link>>();
  table?: NodeTable;
  headConn?: HeadConnection;
  private spreadCounter = 0;
  private readonly pulls = new Map<string, Promise<StoredLoc>>();
  /** Objects owned elsewhere whose copy lives in this node's store. */
  readonly copies = new Map<string, StoredLoc>();
  /** Owner side: ids each remote node holds references to. */
  private readonly remoteHolds = new Map<string, Set<string>>();
  /** Owner side: nodes holding copies of our objects (to free them with us). */
  private readonly copyHolders = new Map<string, Set<string>>();
  private readonly actorHomes = new Map<string, string>();
  private readonly bundleFetches = new Map<string, Promise<void>>();
  /** Job bundles known to be in this node's bundle folder. */
  private readonly haveBundles = new Set<string>();
  private readonly subscribers = new Map<string, Subscriber>();
  /** Objects a leased worker wrote here whose owner's `adopt` is still on its way (HTTP GETs wait). */
  private readonly adoptWaiters = new Map<string, Array<() => void>>();
  /** Bundles of placement groups reserved on this node. */
  readonly bundles: BundleReservations;
  /** Head only: the placement-group table. */
  pgs?: PlacementGroups;

  constructor(
    readonly agent: NodeAgent,
    readonly token: string,
    readonly self: () => NodeView,
  ) {
    this.view.set(agent.opts.nodeId, self());
    this.bundles = new BundleReservations(agent.total, agent.available);
  }

  get selfId(): string {
    return this.agent.opts.nodeId;
  }

  // ------------------------------------------------------------------ membership

  startHead(): void {
    const t = (this.table = new NodeTable());
    t.register(this.self());
    t.onChange = () => {
      this.setView(t.view());
      t.broadcast();
    };
    t.onDead = (id) => this.nodeDied(id);
    t.start();
    this.startPlacementGroups(t);
    // The head's own entry is refreshed from itself, not from heartbeats.
    setInterval(() => {
      t.heartbeat(this.selfId, this.heartbeatFields());
      this.setView(t.view());
    }, 500).unref();
  }

  async startNode(headUrl: string): Promise<void> {
    const hc = (this.headConn = new HeadConnection(headUrl, this.token, this.self, () => this.heartbeatFields(), () => this.agent.namedHosted()));
    hc.onLink = (l) => {
      this.wire(l);
      l.peer = "head";
    };
    await hc.start();
  }

  heartbeatFields() {
    const me = this.agent.nodeInfo();
    return { total: me.resources, available: me.available, queued: me.queuedCount, store: me.store, pending: me.pending, workers: me.workers };
  }

  private setView(nodes: NodeView[]): void {
    const before = new Map([...this.view].map(([k, v]) => [k, v.alive]));
    this.view.clear();
    for (const n of nodes) this.view.set(n.nodeId, n);
    this.view.set(this.selfId, { ...this.self(), ...(this.view.get(this.selfId) ?? {}), alive: true });
    for (const [id, wasAlive] of before) {
      const now = this.view.get(id);
      if (wasAlive && now && !now.alive && id !== this.selfId && !this.table) this.nodeDied(id);
    }
    this.agent.kick();
  }

  headLink(): Link | undefined {
    return this.headConn?.link;
  }

  /** A link to a node (dialled on first use). */
  async linkTo(nodeId: string): Promise<Link> {
    const l = this.links.get(nodeId);
    if (l && !l.closed) return l;
    let p = this.dialing.get(nodeId);
    if (!p) {
      const n = this.view.get(nodeId);
      if (!n || !n.alive) throw new Error(`node ${nodeId.slice(0, 8)} is not alive`);
      p = dial(`ws://${n.ip}:${n.port}/peer`, this.token).then(async (link) => {
        link.peer = nodeId;
        this.wire(link);
        await link.request({ t: "register", node: this.self() });
        this.links.set(nodeId, link);
        return link;
      });
      this.dialing.set(nodeId, p);
      p.finally(() => this.dialing.delete(nodeId)).catch(() => {});
    }
    return p;
  }

  /**
   * Send to a node, dialling if needed. Messages wait in order in its outbox while there is no
   * link; a dial that fails is tried again (50 ms, doubling to 1 s) as long as the node is
   * alive in our view (up to OUTBOX_MAX_MS), or for OUTBOX_UNKNOWN_MS while we have not heard
   * of it yet (a view may still be on its way). Only then, or when the node is known dead,
   * are its messages dropped (callers handle death), and that is logged.
   */
  sendTo(nodeId: string, m: ClusterMsg): void {
    const queued = this.outbox.get(nodeId);
    if (queued) {
      queued.push(m);
      return;
    }
    const l = this.links.get(nodeId);
    if (l && !l.closed) {
      l.send(m);
      return;
    }
    this.outbox.set(nodeId, [m]);
    void this.drainOutbox(nodeId);
  }

  private readonly outbox = new Map<string, ClusterMsg[]>();
  private stopped = false;

  private async drainOutbox(nodeId: string): Promise<void> {
    const since = Date.now();
    for (let attempt = 0; ; attempt++) {
      let why: string;
      try {
        const link = await this.linkTo(nodeId);
        const q = this.outbox.get(nodeId) ?? [];
        this.outbox.delete(nodeId);
        for (const m of q) link.send(m);
        return;
      } catch (e) {
        why = (e as Error).message;
      }
      const n = this.view.get(nodeId);
      const waited = Date.now() - since;
      // A node that stays alive but cannot be reached for a minute (a one-way partition) is
      // given up on too: its messages would pile up without end.
      const hopeless = this.stopped || waited > OUTBOX_MAX_MS || (n ? !n.alive : waited > OUTBOX_UNKNOWN_MS);
      if (hopeless) {
        const q = this.outbox.get(nodeId) ?? [];
        this.outbox.delete(nodeId);
        if (q.length && !this.stopped) console.error(`[agent] dropped ${q.length} message(s) for node ${nodeId.slice(0, 8)} (${q.map((x) => x.t).join(", ")}): ${why}`);
        return;
      }
      await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt)));
    }
  }

  /** A link accepted by our peer server. */
  accept(link: Link): void {
    this.wire(link);
  }

  private wire(link: Link): void {
    link.onMessage = (m, l) => this.onMessage(m, l);
    // Keep the handler already there (the head connection re-dials from it).
    const before = link.onClose;
    link.onClose = (l) => {
      before(l);
      if (l.peer && this.links.get(l.peer) === l) this.links.delete(l.peer);
      // On the head a closed link is a node leaving (or dying): the sweep confirms by silence.
    };
  }

  ownerOf(id: string): string {
    const short = id.slice(0, 8);
    if (this.selfId.startsWith(short)) return this.selfId;
    for (const n of this.view.keys()) if (n.startsWith(short)) return n;
    return this.selfId;
  }

  nodeViews(): NodeView[] {
    return [...this.view.values()];
  }

  // ------------------------------------------------------------------ placement

  place(res: Resources, strategy: Strategy): Placement {
    if (strategy && typeof strategy === "object" && "placementGroup" in strategy) {
      // Into a bundle: the demand becomes the bundle's resources, which only its node has.
      const pg = strategy.placementGroup as { id?: unknown } | undefined;
      if (pg && typeof pg.id === "string") {
        rewriteDemand(res, pg.id, typeof strategy.bundleIndex === "number" ? strategy.bundleIndex : -1);
        strategy = "DEFAULT";
      }
    }
    // This node's own figures are exact and cheap; the others come from the broadcast view.
    const a = this.agent;
    const me: NodeView = { ...this.view.get(this.selfId)!, total: a.total, available: a.available, queued: a.queuedCount(), alive: true };
    return place(me, this.nodeViews(), res, strategy, this.spreadCounter++);
  }

  /** Optimistic accounting: what we send to a node is taken from its view until the next update. */
  private reserve(nodeId: string, res: Resources): void {
    const n = this.view.get(nodeId);
    if (n) {
      subtract(n.available, res);
      n.queued++;
    }
  }

  forwardTask(t: Task, nodeId: string): void {
    t.remoteNode = nodeId;
    t.state = "running";
    this.reserve(nodeId, t.res);
    const rt: RemoteTask = { id: t.id, fn: t.fn, args: this.agent.resolvedArgs(t.args), res: t.res, o: t.o, g: t.g, job: t.job, owner: this.selfId, p: t.parent };
    this.sendTo(nodeId, { t: "exec", task: rt });
  }

  /** A task from another node arrives: fetch its bundle and remote arguments, then queue it here. */
  private async acceptTask(rt: RemoteTask): Promise<void> {
    const task: Task = {
      id: rt.id,
      fn: rt.fn,
      args: [],
      res: rt.res,
      o: rt.o,
      g: rt.g,
      parent: rt.p,
      job: rt.job,
      envKey: envKeyOf(rt.o.env as Record<string, string> | undefined),
      env: rt.o.env as Record<string, string> | undefined,
      cls: "",
      retriesLeft: typeof rt.o.maxRetries === "number" ? (rt.o.maxRetries < 0 ? Infinity : rt.o.maxRetries) : 3,
      depsLeft: 0,
      state: "queued",
      remoteOwner: rt.owner,
    };
    task.cls = `${task.job}|${JSON.stringify(task.res)}|${task.envKey}`;
    const args = rt.args as ResolvedArg[];
    if ((!rt.fn.b || this.haveBundles.has(rt.fn.b)) && !args.some((a) => "loc" in a && a.loc && a.loc.node !== this.selfId)) {
      // The common case (code here already, arguments inline or local): queue it at once.
      task.pre = args;
      this.agent.tasks.set(task.id, task);
      this.agent.enqueueLocal(task);
      return;
    }
    try {
      if (rt.fn.b) await this.ensureBundle(rt.fn.b);
      task.pre = await this.localizeArgs(rt.args as ResolvedArg[]);
    } catch (e) {
      this.sendTo(rt.owner, { t: "result", id: rt.id, err: { kind: "ObjectLostError", message: `could not fetch what ${rt.fn.n} needs on node ${this.agent.opts.nodeName}: ${(e as Error).message}` } });
      return;
    }
    this.agent.tasks.set(task.id, task);
    this.agent.enqueueLocal(task);
  }

  /** Copy arguments that live in other nodes' stores into ours. */
  async localizeArgs(args: ResolvedArg[]): Promise<ResolvedArg[]> {
    return Promise.all(
      args.map(async (a) => {
        if ("loc" in a && a.loc && a.loc.node !== this.selfId) return { ref: (a as any).ref, loc: await this.pull((a as any).ref, a.loc) };
        return a;
      }),
    );
  }

  async ensureBundle(hash: string): Promise<void> {
    if (this.haveBundles.has(hash)) return;
    const file = path.join(this.agent.bundleDir, `${hash}.mjs`);
    if (fs.existsSync(file)) {
      this.haveBundles.add(hash);
      return;
    }
    let p = this.bundleFetches.get(hash);
    if (!p) {
      p = (async () => {
        const head = this.headLink();
        if (!head) throw new Error("not connected to the head to fetch the job's code");
        const data = await head.request<Uint8Array>({ t: "getBundle", hash });
        const tmp = `${file}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, data);
        fs.renameSync(tmp, file);
      })();
      this.bundleFetches.set(hash, p);
      p.catch(() => this.bundleFetches.delete(hash));
    }
    return p;
  }

  /** The node running a task for another owner reports its result there. */
  sendResult(t: Task, r: { v?: Tagged; loc?: StoredLoc; err?: unknown }): void {
    if (r.loc) this.copies.set(t.id, r.loc);
    this.holdInTransit(t.remoteOwner!, r.v?.r ?? r.loc?.r);
    this.sendTo(t.remoteOwner!, { t: "result", id: t.id, v: r.v, loc: r.loc, err: r.err as any });
  }

  sendYield(t: Task, i: number, v?: Tagged, loc?: StoredLoc): void {
    if (loc) this.copies.set(`${t.id}#${i}`, loc);
    this.holdInTransit(t.remoteOwner!, v?.r ?? loc?.r);
    this.sendTo(t.remoteOwner!, { t: "gyield", id: t.id, i, v, loc });
  }

  /**
   * Refs of ours nested in a value sent to another node are counted for that node before the
   * value leaves: the worker that made them may drop its refs before the receiver's addref
   * arrives. The receiver's addref is then a no-op and its decref releases the hold.
   */
  private holdInTransit(nodeId: string, ids: string[] | undefined): void {
    if (!ids) return;
    let s = this.remoteHolds.get(nodeId);
    for (const id of ids) {
      if (this.ownerOf(id) !== this.selfId || !this.agent.objects.get(id)) continue;
      if (!s) this.remoteHolds.set(nodeId, (s = new Set()));
      if (s.has(id)) continue;
      s.add(id);
      this.agent.objects.incr(id);
    }
  }

  // ------------------------------------------------------------------ objects

  /** Pulls under way that local readers may follow as they land: id -> the growing copy, once it exists. */
  private readonly streaming = new Map<string, { loc?: StoredLoc; fns: Array<(l: StoredLoc) => void> }>();

  /**
   * Pull an object from the node holding it into our store. `onStream`: the caller (a local
   * process waiting in get) can read the copy while it arrives; it gets a location marked `g`
   * as soon as bytes flow, and the pull then writes a fresh file whose length is its progress.
   * Without it (task arguments, which must be whole before the task is queued) the copy goes
   * into a warm parked file when one fits.
   */
  pull(id: string, loc: StoredLoc, onStream?: (growing: StoredLoc) => void): Promise<StoredLoc> {
    if (loc.node === this.selfId) return Promise.resolve(loc);
    const have = this.copies.get(id);
    if (have) return Promise.resolve(have);
    let p = this.pulls.get(id);
    if (p) {
      const st = this.streaming.get(id);
      if (st && onStream) {
        if (st.loc) onStream(st.loc);
        else st.fns.push(onStream);
      }
      return p;
    }
    // With the native helpers readers map the copy once it is whole (free) rather than copy it
    // while it lands (into fresh memory, ~1 GB/s): no streaming then.
    const mapped = loc.size >= MAP_MIN_BYTES && native() !== undefined;
    const st = onStream && !mapped ? { fns: [onStream] as Array<(l: StoredLoc) => void>, loc: undefined as StoredLoc | undefined } : undefined;
    if (st) this.streaming.set(id, st);
    p = (async () => {
      const file = path.join(this.agent.store.dir, id.replace(/[^A-Za-z0-9._-]/g, "_"));
      const rc = st ? undefined : takeParkedFile(this.agent.store.dir, loc.size, file);
      const started = st
        ? () => {
            st.loc = { ...loc, path: file, node: this.selfId, g: 1 };
            for (const f of st.fns.splice(0)) f(st.loc);
          }
        : undefined;
      // A warm file the store keeps mapped: the socket is read straight into its pages.
      const mapping = rc && mapped ? this.agent.store.takeWarmMapping(rc) : undefined;
      const ended = this.agent.store.transferStarted();
      try {
        // On failure fetchObject removes the file (a parked one taken for it too).
        await this.fetchObject(loc, id, file, !!rc, started, mapping);
      } finally {
        ended();
      }
      const local: StoredLoc = { ...loc, path: file, node: this.selfId, rc };
      if (!rc) delete local.rc;
      this.copies.set(id, local);
      this.agent.store.add(id, local);
      // The owner frees every copy with its object: tell it this node now holds one (a copy
      // pulled for a task argument is otherwise unknown to it and would outlive the object).
      const owner = this.ownerOf(id);
      if (owner !== this.selfId) this.sendTo(owner, { t: "copied", ids: [id] });
      return local;
    })();
    this.pulls.set(id, p);
    p.finally(() => {
      this.pulls.delete(id);
      this.streaming.delete(id);
    }).catch(() => {});
    return p;
  }

  /**
   * Copy an object's bytes from the node holding it: one HTTP stream (GET /object/<id> on its
   * peer port, cluster token required), written to our store as it arrives (fetchInto in
   * transfer.ts). TCP gives the back-pressure; nothing is re-encoded on the way.
   */
  private fetchObject(loc: StoredLoc, id: string, file: string, reuse: boolean, onStart: (() => void) | undefined, mapping?: SharedMapping): Promise<void> {
    const n = this.view.get(loc.node);
    if (!n || !n.alive) return Promise.reject(new Error(`node ${loc.node.slice(0, 8)} holding it is not alive`));
    return fetchInto({
      host: n.ip,
      port: n.port,
      unixPath: sameHostSocket(this.self(), n),
      mapping,
      release: (m) => this.agent.store.releaseMapping(m),
      path: `/object/${encodeURIComponent(id)}`,
      token: this.token,
      file,
      size: loc.size,
      reuse,
      stallMs: FETCH_STALL_MS,
      onStart,
      peer: n.name,
    });
  }

  /** Serve GET /object/<id> to peers (see fetchObject); false for any other request. */
  serveHttp(req: http.IncomingMessage, res: http.ServerResponse, waited = false): boolean {
    const m = /^\/object\/([^/?]+)$/.exec(req.url ?? "");
    if (!m || req.method !== "GET") return false;
    if (!tokenMatches(req, this.token)) {
      res.writeHead(401).end("missing or wrong cluster token\n");
      return true;
    }
    const id = decodeURIComponent(m[1]!);
    const loc = this.agent.objects.get(id)?.loc ?? this.copies.get(id);
    if ((!loc || loc.node !== this.selfId) && !waited && this.ownerOf(id) !== this.selfId) {
      // Written by a worker leased to another node's process: its owner's `adopt` may still be
      // on the way (it travels on the link, this request on its own connection).
      const list = this.adoptWaiters.get(id) ?? [];
      this.adoptWaiters.set(id, list);
      let done = false;
      const retry = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.serveHttp(req, res, true);
      };
      const timer = setTimeout(() => {
        const l = this.adoptWaiters.get(id);
        if (l) {
          const i = l.indexOf(retry);
          if (i >= 0) l.splice(i, 1);
          if (!l.length) this.adoptWaiters.delete(id);
        }
        retry();
      }, 1000);
      list.push(retry);
      return true;
    }
    if (!loc || loc.node !== this.selfId) {
      res.writeHead(404).end(`object ${id} is not on node ${this.agent.opts.nodeName}\n`);
      return true;
    }
    this.agent.store.touch(id);
    const ended = this.agent.store.transferStarted();
    try {
      // its current path: a spill moves it and updates loc
      serveObjectFile(req, res, loc.path, loc.size, FETCH_STALL_MS, ended);
    } catch (e) {
      ended();
      res.writeHead(404).end(`object ${id} could not be opened on node ${this.agent.opts.nodeName}: ${(e as Error).message}\n`);
    }
    return true;
  }

  /**
   * Owner side: a worker of another node, leased to a process here, wrote this result into its
   * node's store. Recorded like a forwarded task's result: that node keeps the file (as a copy
   * of our object) until we free it. `known` false: the object is already gone here.
   */
  adopt(id: string, loc: StoredLoc, known: boolean): void {
    if (!known) {
      this.sendTo(loc.node, { t: "free", ids: [id] });
      return;
    }
    this.recordRemoteCopy(id, loc);
    this.sendTo(loc.node, { t: "adopt", id, loc });
  }

  /** Owner side: ask a node for up to `n` leases on its idle workers for a process here. */
  async requestLeases(
    nodeId: string,
    res: Resources,
    job: string,
    b: string | undefined,
    n: number,
    env: Record<string, string> | undefined,
  ): Promise<Array<{ worker: string; secret: string }>> {
    const link = await this.linkTo(nodeId);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("no answer")), 5000);
    });
    try {
      const g = await Promise.race([link.request<Array<{ worker: string; secret: string }>>({ t: "lease", res, job, b, n, owner: this.selfId, ...(env ? { env } : {}) }), timeout]);
      return Array.isArray(g) ? g : [];
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * `GET /direct/<worker>` upgraded to a raw byte stream: a process of another node that holds
   * a lease on one of our workers talks to it through here (cluster token and the lease's
   * secret required); the bytes are piped to the worker's Unix socket, never decoded here.
   */
  upgradeDirect(req: http.IncomingMessage, socket: net.Socket, head: Buffer): boolean {
    const m = /^\/direct\/([^/?]+)$/.exec(req.url ?? "");
    if (!m) return false;
    const deny = (status: string, why: string) => {
      socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${why}\n`);
      return true;
    };
    if (!tokenMatches(req, this.token)) return deny("401 Unauthorized", "missing or wrong cluster token");
    const w = this.agent.workers.get(decodeURIComponent(m[1]!));
    const rl = w?.remoteLease;
    const given = Buffer.from(String(req.headers["x-tray-lease"] ?? ""));
    const want = Buffer.from(rl?.secret ?? "");
    if (!w || !rl || rl.socket || w.state !== "direct" || given.length !== want.length || !crypto.timingSafeEqual(given, want)) {
      return deny("403 Forbidden", "no such lease");
    }
    rl.socket = socket;
    clearTimeout(rl.timer);
    socket.setNoDelay?.(true);
    const unix = net.createConnection(w.sock);
    const end = () => {
      socket.destroy();
      unix.destroy();
      this.agent.endRemoteLease(w, rl);
    };
    unix.on("connect", () => {
      socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: tray-direct\r\nconnection: Upgrade\r\n\r\n");
      if (head.length) unix.write(head);
      socket.pipe(unix);
      unix.pipe(socket);
    });
    socket.on("close", end);
    unix.on("close", end);
    socket.on("error", () => {});
    unix.on("error", () => {});
    return true;
  }

  /** Make sure an entry's value can be read on this node (pull a remote copy first). */
  async localize(e: ObjEntry, onStream?: (growing: StoredLoc) => void): Promise<void> {
    if (!e.loc || e.loc.node === this.selfId) return;
    const holder = e.loc.node;
    e.loc = await this.pull(e.id, e.loc, onStream);
    if (this.ownerOf(e.id) === this.selfId) {
      let s = this.copyHolders.get(e.id);
      if (!s) this.copyHolders.set(e.id, (s = new Set()));
      s.add(holder);
    }
  }

  /** A local process wants an object owned by another node: borrow it and subscribe there. */
  borrow(id: string): ObjEntry {
    let e = this.agent.objects.get(id);
    if (e) return e;
    e = this.agent.objects.create(id, 0);
    e.borrowed = true;
    const owner = this.ownerOf(id);
    const ov = this.view.get(owner);
    if (ov && !ov.alive) {
      // Its owner is gone, and with it the object's record: nothing can rebuild it.
      this.agent.objects.resolve(id, encodeError({ kind: "ObjectLostError", message: ownerLost(id, ov.name) }), undefined);
      return e;
    }
    this.sendTo(owner, { t: "addref", ids: [id] });
    this.sendTo(owner, { t: "sub", ids: [id] });
    return e;
  }

  /** A borrowed object is no longer referenced here. */
  released(e: ObjEntry): void {
    const copy = this.copies.get(e.id);
    if (copy) {
      this.copies.delete(e.id);
      this.agent.store.free(e.id, copy);
    }
    this.sendTo(this.ownerOf(e.id), { t: "decref", ids: [e.id] });
  }

  /** Our object was freed: nodes holding copies drop theirs. */
  freedOwned(id: string): void {
    const holders = this.copyHolders.get(id);
    if (!holders) return;
    this.copyHolders.delete(id);
    for (const n of holders) this.sendTo(n, { t: "free", ids: [id] });
  }

  recordRemoteCopy(id: string, loc: StoredLoc): void {
    if (loc.node === this.selfId) return;
    let s = this.copyHolders.get(id);
    if (!s) this.copyHolders.set(id, (s = new Set()));
    s.add(loc.node);
  }

  private subscriberFor(link: Link): Subscriber {
    const key = link.peer ?? "?";
    let s = this.subscribers.get(key);
    if (!s) {
      s = { notify: (id, e) => link.send({ t: "ready", items: [e.loc ? { id, loc: e.loc } : { id, v: e.v }] }) };
      this.subscribers.set(key, s);
    }
    return s;
  }

  // ------------------------------------------------------------------ actors

  forwardActor(a: Actor, nodeId: string): void {
    a.home = nodeId;
    a.state = "starting";
    this.actorHomes.set(a.id, nodeId);
    this.reserve(nodeId, a.res);
    this.sendTo(nodeId, {
      t: "createActor",
      actor: { id: a.id, fn: a.fn, args: this.agent.resolvedArgs(a.args), res: a.res, o: a.o, job: a.job, owner: this.selfId },
    });
  }

  /** Where does this actor live? Ours: we know; another owner's: ask it (cached). */
  async locateActor(actorId: string): Promise<string | undefined> {
    const local = this.agent.actors.get(actorId);
    if (local && !local.home) return this.selfId;
    if (local?.home) return local.home;
    const cached = this.actorHomes.get(actorId);
    if (cached && this.view.get(cached)?.alive) return cached;
    const owner = this.ownerOf(actorId);
    if (owner === this.selfId) return undefined;
    const link = await this.linkTo(owner);
    const home = await link.request<string | undefined>({ t: "locateActor", actor: actorId });
    if (home) this.actorHomes.set(actorId, home);
    return home;
  }

  /** The head told us where a named actor lives (getActor): calls go straight there. */
  noteHome(actorId: string, home: string): void {
    if (home !== this.selfId) this.actorHomes.set(actorId, home);
  }

  cachedHome(actorId: string): string | undefined {
    const h = this.actorHomes.get(actorId);
    return h && this.view.get(h)?.alive ? h : undefined;
  }

  forwardCall(t: Task, home: string): void {
    t.remoteNode = home;
    t.state = "running";
    this.sendTo(home, { t: "call", id: t.id, actor: t.actor!, m: t.m!, args: this.agent.resolvedArgs(t.args), caller: this.selfId });
  }

  // ------------------------------------------------------------------ failures

  /** A node died: retry or fail what ran there, rebuild or lose what lived there. */
  nodeDied(nodeId: string): void {
    const name = this.view.get(nodeId)?.name ?? nodeId.slice(0, 8);
    const v = this.view.get(nodeId);
    if (v) v.alive = false;
    this.links.get(nodeId)?.close();
    this.links.delete(nodeId);
    for (const [a, home] of this.actorHomes) if (home === nodeId) this.actorHomes.delete(a);
    // Objects that node owned: a borrowed copy kept here still serves; otherwise they are lost.
    for (const e of [...this.agent.objects.entries.values()]) {
      if (!e.borrowed || this.ownerOf(e.id) !== nodeId) continue;
      if (e.s === 0) this.agent.objects.resolve(e.id, encodeError({ kind: "ObjectLostError", message: ownerLost(e.id, name) }), undefined);
      else if (e.loc && e.loc.node === nodeId) {
        e.loc = undefined;
        e.v = encodeError({ kind: "ObjectLostError", message: ownerLost(e.id, name) });
      }
    }
    const holds = this.remoteHolds.get(nodeId);
    this.remoteHolds.delete(nodeId);
    if (holds) for (const id of holds) this.agent.objects.decr(id);
    this.agent.onNodeDied(nodeId, name);
    this.pgs?.nodeDied(nodeId);
  }

  // ------------------------------------------------------------------ messages

  private onMessage(m: ClusterMsg, link: Link): void {
    const a = this.agent;
    switch (m.t) {
      case "register":
        link.peer = m.node.nodeId;
        this.links.set(m.node.nodeId, link);
        if (this.table) {
          this.table.register(m.node, link);
          for (const n of m.named ?? []) a.rememberName(n.key, { id: n.id, c: n.c, home: m.node.nodeId });
        }
        link.reply(m.rid!, true);
        return;
      case "hb":
        this.table?.heartbeat(m.nodeId, { ...(m.total ? { total: m.total } : {}), available: m.available, queued: m.queued, store: m.store, pending: m.pending, workers: m.workers });
        return;
      case "view":
        this.setView(m.nodes);
        return;
      case "exec":
        void this.acceptTask(m.task);
        return;
      case "result":
        a.onRemoteResult(m.id, { v: m.v, loc: m.loc, err: m.err });
        return;
      case "gyield":
        a.onRemoteYield(m.id, m.i, m.v, m.loc);
        return;
      case "sub": {
        const sub = this.subscriberFor(link);
        for (const id of m.ids) {
          const e = a.objects.get(id);
          if (!e) link.send({ t: "ready", items: [{ id, v: encodeError({ kind: "ObjectLostError", message: `object ${id} is not known to its owner on node ${a.opts.nodeName}: it was freed or never created` }) }] });
          else if (e.s === 1) sub.notify(id, e);
          else (e.subs ??= new Set()).add(sub as any);
        }
        return;
      }
      case "ready":
        for (const it of m.items) void a.onRemoteReady(it.id, it.v, it.loc);
        return;
      case "addref": {
        const peer = link.peer ?? "?";
        let s = this.remoteHolds.get(peer);
        if (!s) this.remoteHolds.set(peer, (s = new Set()));
        for (const id of m.ids) {
          if (s.has(id) || !a.objects.get(id)) continue;
          s.add(id);
          a.objects.incr(id);
        }
        return;
      }
      case "decref": {
        const s = this.remoteHolds.get(link.peer ?? "?");
        for (const id of m.ids) if (s?.delete(id)) a.objects.decr(id);
        return;
      }
      case "copied":
        for (const id of m.ids) {
          if (a.objects.get(id)) this.recordRemoteCopy(id, { node: link.peer ?? "?" } as StoredLoc);
          else link.send({ t: "free", ids: [id] });
        }
        return;
      case "free":
        for (const id of m.ids) {
          const loc = this.copies.get(id);
          if (!loc) continue;
          this.copies.delete(id);
          const e = a.objects.get(id);
          if (e?.loc === loc) e.loc = undefined;
          a.store.free(id, loc);
        }
        return;
      case "getBundle": {
        const file = path.join(a.bundleDir, `${m.hash}.mjs`);
        fs.readFile(file, (err, data) => link.reply(m.rid!, err ? undefined : data, err ? `bundle ${m.hash} is not on the head` : undefined));
        return;
      }
      case "jobLog":
        a.head?.onJobLog(m.job, m.stream, m.line);
        return;
      case "createActor":
        void this.hostActor(m.actor);
        return;
      case "actorState":
        a.onRemoteActorState(m.actor, m.state, m.node, m.cause);
        return;
      case "call":
        a.acceptRemoteCall(m.id, m.actor, m.m, m.args as ResolvedArg[], m.caller, (args) => this.localizeArgs(args));
        return;
      case "kill":
        a.killActorById(m.actor, m.noRestart);
        return;
      case "cancel":
        a.cancelTask(m.id, m.force, m.recursive === true);
        return;
      case "cancelLeased":
        a.cancelLeased(m.worker, m.secret, m.id, m.recursive);
        return;
      case "nameActor":
        link.reply(m.rid!, a.registerName(m.key, m.actor, m.getIfExists));
        return;
      case "lookupName":
        link.reply(m.rid!, a.lookupName(m.key));
        return;
      case "dropName":
        a.dropName(m.key, m.actor);
        return;
      case "locateActor": {
        const act = a.actors.get(m.actor);
        link.reply(m.rid!, act && act.state !== "dead" ? (act.home ?? this.selfId) : undefined);
        return;
      }
      case "endJob":
        a.endJob(m.job, false);
        return;
      case "lease": {
        const grant = () => link.reply(m.rid!, a.grantRemoteLeases(m.owner, m.res, m.job, m.n, m.env));
        // The worker imports the job's code from this node's bundle folder.
        if (m.b) this.ensureBundle(m.b).then(grant, () => link.reply(m.rid!, []));
        else grant();
        return;
      }
      case "leaseLost":
        a.onRemoteLeaseLost(m.worker, m.kind, m.message);
        return;
      case "leaseEnd":
        a.leaseEnd(m.worker, m.secret);
        return;
      case "adopt": {
        this.copies.set(m.id, m.loc);
        a.store.add(m.id, m.loc);
        const waiting = this.adoptWaiters.get(m.id);
        this.adoptWaiters.delete(m.id);
        for (const f of waiting ?? []) f();
        return;
      }
      case "leave":
        this.table?.markDead(m.nodeId);
        return;
      case "pg":
        void this.handlePg(m, a.opts.nodeId).then((r) => link.reply(m.rid!, r));
        return;
      case "pgPrepare": {
        const ok = this.bundles.prepare(m.id, m.i, m.res);
        link.reply(m.rid!, ok);
        return;
      }
      case "pgCommit": {
        const ok = this.bundles.commit(m.id, m.i);
        a.kick();
        link.reply(m.rid!, ok ? { total: a.total, available: a.available } : false);
        return;
      }
      case "pgRelease":
        this.bundles.release(m.id, m.i);
        a.kick();
        link.reply(m.rid!, { total: a.total, available: a.available });
        return;
      case "rep":
        return;
    }
  }

  private async hostActor(spec: Extract<ClusterMsg, { t: "createActor" }>["actor"]): Promise<void> {
    // Recorded at once, so calls that arrive while its code and arguments are fetched queue up.
    const a = this.agent.hostActor(spec);
    try {
      if (spec.fn.b) await this.ensureBundle(spec.fn.b);
      a.pre = await this.localizeArgs(spec.args as ResolvedArg[]);
      this.agent.placeActor(a);
    } catch (e) {
      this.agent.actorDead(a, `could not start on node ${this.agent.opts.nodeName}: ${(e as Error).message}`);
    }
  }

  /** Tell every node a job ended (head only). */
  broadcastEndJob(job: string): void {
    this.pgs?.removeJob(job);
    for (const l of this.table?.links.values() ?? []) l.send({ t: "endJob", job });
  }

  /** Head: forward a job log line from a node. */
  sendJobLog(job: string, stream: "stdout" | "stderr", line: string): void {
    this.headLink()?.send({ t: "jobLog", job, stream, line });
  }

  // ------------------------------------------------------------------ placement groups

  private startPlacementGroups(t: NodeTable): void {
    const grace = Number(process.env.TRAY_INFEASIBLE_GRACE_MS ?? 10_000);
    this.pgs = new PlacementGroups(
      {
        nodes: () =>
          t.view().filter((n) => n.alive).map((n) =>
            n.nodeId === this.selfId
              ? { nodeId: n.nodeId, name: n.name, total: this.agent.total, available: this.agent.available }
              : { nodeId: n.nodeId, name: n.name, total: n.total, available: n.available },
          ),
        prepare: async (node, pg, i, b) => {
          if (node === this.selfId) return this.bundles.prepare(pg, i, b);
          const l = t.links.get(node);
          if (!l) return false;
          return (await l.request<boolean>({ t: "pgPrepare", id: pg, i, res: b })) === true;
        },
        commit: async (node, pg, i) => {
          if (node === this.selfId) {
            const ok = this.bundles.commit(pg, i);
            this.agent.kick();
            return ok;
          }
          const l = t.links.get(node);
          if (!l) return false;
          const r = await l.request<false | { total: Resources; available: Resources }>({ t: "pgCommit", id: pg, i });
          if (!r) return false;
          // Known at once in the view (not only at the node's next heartbeat).
          const n = t.nodes.get(node);
          if (n) {
            n.total = r.total;
            n.available = r.available;
          }
          return true;
        },
        release: async (node, pg, i) => {
          if (node === this.selfId) {
            this.bundles.release(pg, i);
            this.agent.kick();
            return;
          }
          const l = t.links.get(node);
          if (!l) return;
          const r = await l.request<{ total: Resources; available: Resources }>({ t: "pgRelease", id: pg, i });
          const n = t.nodes.get(node);
          if (n && r) {
            n.total = r.total;
            n.available = r.available;
          }
        },
        changed: () => {
          t.heartbeat(this.selfId, this.heartbeatFields());
          t.onChange();
        },
      },
      grace,
    );
    this.pgs.start();
  }

  /** A placement-group request from a process on this node (create, wait, remove). */
  pgRequest(conn: Conn, m: { rid: number; op: string; id: string; bundles?: Resources[]; strategy?: string; name?: string }): void {
    const job = this.agent.jobOf(conn);
    const msg = { t: "pg" as const, op: m.op, id: m.id, bundles: m.bundles, strategy: m.strategy, name: m.name, job };
    const answer = (r: { value?: unknown; err?: any }) => conn.send(r.err ? { t: "rep", rid: m.rid, err: r.err } : { t: "rep", rid: m.rid, value: r.value });
    if (this.pgs) {
      void this.handlePg(msg, this.selfId).then(answer);
      return;
    }
    const head = this.headLink();
    if (!head) {
      answer({ err: { kind: "TaskError", causeName: "Error", message: "this node is not connected to the head, which keeps placement groups" } });
      return;
    }
    head.request<{ value?: unknown; err?: unknown }>(msg).then(answer, (e) => answer({ err: { kind: "TaskError", causeName: "Error", message: `placement group request failed: ${(e as Error).message}` } }));
  }

  /** Head: one placement-group operation; answers { value } or { err } (a wire error). */
  private async handlePg(m: { op: string; id: string; bundles?: Resources[]; strategy?: string; name?: string; job?: string }, _from: string): Promise<{ value?: unknown; err?: unknown }> {
    const pgs = this.pgs;
    if (!pgs) return { err: { kind: "TaskError", causeName: "Error", message: "placement groups are kept by the head" } };
    const bad = (message: string) => ({ err: { kind: "TaskError", causeName: "ValueError", message } });
    switch (m.op) {
      case "create": {
        if (!PG_STRATEGIES.includes(m.strategy as PgStrategy)) return bad(`placement group strategy must be one of ${PG_STRATEGIES.join(", ")}, got ${JSON.stringify(m.strategy)}`);
        if (!Array.isArray(m.bundles) || !m.bundles.length) return bad("a placement group needs at least one bundle");
        const r = pgs.create({ id: m.id, name: m.name, job: m.job ?? "", strategy: m.strategy as PgStrategy, bundles: m.bundles });
        return r.error ? bad(r.error) : { value: true };
      }
      case "wait":
        return pgs.wait(m.id).then(
          () => ({ value: true }),
          (err) => ({ err }),
        );
      case "remove":
        await pgs.remove(m.id);
        return { value: true };
      case "list":
        return { value: pgs.list() };
      default:
        return bad(`unknown placement group operation ${m.op}`);
    }
  }

  stop(): void {
    this.stopped = true;
    this.headLink()?.send({ t: "leave", nodeId: this.selfId });
    this.pgs?.stop();
    this.table?.stop();
    this.headConn?.stop();
    for (const l of this.links.values()) l.close();
  }

  isConn(x: unknown): x is Conn {
    return !!x && typeof x === "object" && "socket" in (x as any);
  }
}
