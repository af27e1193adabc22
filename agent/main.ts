// Entry of dist/agent.js: `agent` (the node agent), `worker` and `driver` (processes the
// agent starts). One bundled file, so installing tray on a host is copying one file.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { NodeAgent } from "./node/agent.js";
import { detectGpus } from "./node/gpu.js";
import { ControlStore } from "./head/control-store.js";
import { JobManager } from "./head/jobs.js";
import { startApi } from "./head/api.js";
import { runWorker } from "./worker/worker.js";
import { runDriver } from "./worker/driver.js";
import http from "node:http";
import { Distributed } from "./node/distributed.js";
import { acceptPeers } from "./cluster/membership.js";
import type { NodeView } from "../src/protocol/cluster.js";
import { native } from "../src/runtime/native.js";
import { hostKey } from "./node/transfer.js";

function parseArgs(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else out[a.slice(2)] = argv[++i] ?? "";
  }
  return out;
}

function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(":");
  if (i < 0) throw new Error(`--listen must be HOST:PORT, got ${s}`);
  return [s.slice(0, i), Number(s.slice(i + 1))];
}

async function runAgent(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const role = a.role ?? "node";
  const cluster = a.cluster ?? "default";
  const stateDir = path.resolve(a["state-dir"] ?? path.join(os.homedir(), ".tray", "agent", cluster));
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const token = fs.readFileSync(a["token-file"] ?? path.join(stateDir, "token"), "utf8").trim();
  const gpus = detectGpus();
  const given = a.resources ? (JSON.parse(a.resources) as Record<string, number>) : {};
  const resources: Record<string, number> = {
    CPU: os.availableParallelism(),
    memory: Math.floor(os.totalmem() * 0.7),
    ...(gpus.length ? { GPU: gpus.length } : {}),
    ...given,
  };
  if (resources.GPU !== undefined && resources.GPU > gpus.length && gpus.length > 0) resources.GPU = gpus.length;
  const [host, port] = splitHostPort(a.listen ?? "127.0.0.1:0");
  const nodeId = crypto.randomBytes(8).toString("hex");
  const agent = new NodeAgent({
    clusterName: cluster,
    nodeId,
    nodeName: a["node-name"] ?? os.hostname(),
    nodeType: a["node-type"] ?? (role === "head" ? "head" : "worker"),
    stateDir,
    agentScript: process.argv[1]!,
    resources,
    // GPUs beyond the configured count are not handed out.
    gpus: gpus.slice(0, resources.GPU ?? 0),
    objectStoreMemory: Number(a["object-store-memory"] ?? Math.floor(os.totalmem() * 0.3)),
    isHead: role === "head",
    nodeIp: a["node-ip"] ?? host,
  });
  await agent.start();

  let api: Awaited<ReturnType<typeof startApi>> | undefined;
  let peerServer: http.Server | undefined;
  let store: ControlStore | undefined;
  let jobs: JobManager | undefined;
  let listenPort = port;
  // Large objects for agents on this host (same hostKey) go over a Unix socket: the peer port's
  // GET /object/<id>, token and all, without TCP's loopback cost. Only with the native helpers,
  // which make the stream the bottleneck worth that.
  const objectServer = native() ? await startObjectSocket(agent.socketPath.replace(/\.sock$/, ".obj.sock"), (q, r) => net.serveHttp(q, r)) : undefined;
  const selfView = (): NodeView => {
    const me = agent.nodeInfo();
    return {
      nodeId,
      name: me.name,
      nodeType: me.nodeType,
      ip: me.address,
      port: listenPort,
      ...(objectServer ? { objSock: objectServer.path, hostKey: hostKey() } : {}),
      isHead: role === "head",
      alive: true,
      total: me.resources,
      available: me.available,
      queued: me.queuedCount,
      lastSeen: Date.now(),
      gpus: me.gpus,
      store: me.store,
      pending: me.pending,
      workers: me.workers,
    };
  };
  const net = new Distributed(agent, token, selfView);
  agent.net = net;
  if (role === "head") {
    store = new ControlStore(stateDir);
    jobs = new JobManager(store, agent);
    const j = jobs;
    const st = store;
    agent.head = {
      onJobLog: (job, stream, line) => j.log(job, stream, line),
      onJobDone: (job, ok, err, result) => j.reported(job, ok, err, result),
      nodes: () => agent.clusterNodes(),
    };
    api = await startApi(
      {
        token,
        jobs: j,
        store: st,
        nodes: () => agent.clusterNodes(),
        status: () => ({
          cluster,
          nodes: agent.clusterNodes(),
          actors: agent.actorList(),
          placementGroups: net.pgs?.list() ?? [],
          jobs: st.listJobs(20),
        }),
        // Node agents join on the same port, at /peer, with the same token.
        peerUpgrade: (srv) => {
          const peers = acceptPeers(srv, token, (l) => net.accept(l));
          // ...and processes of other nodes holding leases on this node's workers, at /direct.
          return (req, socket, h) => peers(req, socket, h) || net.upgradeDirect(req, socket, h);
        },
        httpRequest: (req, res) => net.serveHttp(req, res),
      },
      host,
      port,
    );
    listenPort = api.port;
    net.startHead();
    j.prestartDriver();
  } else {
    if (!a.head) throw new Error("--head ws://HOST:PORT is required for --role node");
    peerServer = http.createServer((q, r) => {
      if (!net.serveHttp(q, r)) r.writeHead(426).end();
    });
    const onUpgrade = acceptPeers(peerServer, token, (l) => net.accept(l));
    peerServer.on("upgrade", (req, socket, h) => {
      if (!onUpgrade(req, socket, h) && !net.upgradeDirect(req, socket as import("node:net").Socket, h)) socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      peerServer!.once("error", reject);
      peerServer!.listen(port, host, () => resolve());
    });
    listenPort = (peerServer.address() as { port: number }).port;
    const headUrl = a.head.replace(/\/+$/, "") + "/peer";
    await net.startNode(headUrl);
  }

  const ready = { pid: process.pid, nodeId, listen: `${host}:${listenPort}`, socket: agent.socketPath };
  if (a["ready-file"]) {
    const tmp = a["ready-file"] + ".tmp";
    fs.writeFileSync(tmp, JSON.stringify(ready));
    fs.renameSync(tmp, a["ready-file"]);
  }
  console.log(`tray agent ready ${JSON.stringify(ready)}`);

  let stopping = false;
  const shutdown = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`tray agent stopping (${sig})`);
    jobs?.stopAll();
    api?.close();
    peerServer?.close();
    objectServer?.close();
    net.stop();
    await agent.stop();
    store?.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

/** An HTTP server on a Unix socket (mode 0600) for object transfers between agents of one host. */
async function startObjectSocket(file: string, handle: (q: http.IncomingMessage, r: http.ServerResponse) => boolean) {
  fs.rmSync(file, { force: true });
  const server = http.createServer((q, r) => {
    if (!handle(q, r)) r.writeHead(404).end("only /object/<id> is served here\n");
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(file, () => resolve());
    });
    fs.chmodSync(file, 0o600);
  } catch (e) {
    console.error(`tray agent: no object socket at ${file} (${(e as Error).message}); peers on this host use TCP`);
    return undefined;
  }
  return {
    path: file,
    close: () => {
      server.close();
      fs.rmSync(file, { force: true });
    },
  };
}

const mode = process.argv[2];
const main = mode === "worker" ? runWorker() : mode === "driver" ? runDriver() : mode === "agent" ? runAgent(process.argv.slice(3)) : undefined;
if (!main) {
  console.error("usage: agent.js agent --role head|node [options] (see docs/contracts.md)");
  process.exit(2);
}
main.catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
