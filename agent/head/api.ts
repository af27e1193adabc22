// The head's WebSocket API: the only door into the cluster. Every connection must present
// the cluster token (401 otherwise); every request is validated; a malformed request gets an
// error reply and never disturbs the agent.
import http from "node:http";
import crypto from "node:crypto";
import { WebSocketServer, type WebSocket } from "ws";
import { decodeApi, encodeApi, MAX_API_FRAME_BYTES, validateRequest, type JobRecord, type LogLine } from "../../src/protocol/api.js";
import type { JobManager, JobFollower } from "./jobs.js";
import type { ControlStore } from "./control-store.js";

export interface ApiDeps {
  token: string;
  jobs: JobManager;
  store: ControlStore;
  nodes(): unknown[];
  status(): unknown;
  /** Plain HTTP requests other parts serve on this port (object transfers between nodes). */
  httpRequest?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  /** Other upgrade paths on the same port (node agents joining at /peer). */
  peerUpgrade?: (server: http.Server) => (req: http.IncomingMessage, socket: any, head: Buffer) => boolean;
}

function tokenOk(req: http.IncomingMessage, token: string): boolean {
  const auth = req.headers.authorization ?? "";
  let given = auth.startsWith("Bearer ") ? auth.slice(7) : "";
  if (!given) {
    try {
      given = new URL(req.url ?? "/", "http://x").searchParams.get("token") ?? "";
    } catch {
      given = "";
    }
  }
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

export async function startApi(deps: ApiDeps, host: string, port: number): Promise<{ server: http.Server; port: number; close(): void }> {
  const server = http.createServer((req, res) => {
    if (deps.httpRequest?.(req, res)) return;
    res.writeHead(426, { "content-type": "text/plain" });
    res.end("tray head API: connect with a WebSocket and the cluster token\n");
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_API_FRAME_BYTES });
  const peers = deps.peerUpgrade?.(server);
  server.on("upgrade", (req, socket, head) => {
    if (peers?.(req, socket, head)) return;
    if (!tokenOk(req, deps.token)) {
      socket.end("HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nmissing or wrong cluster token\n");
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => serve(ws, deps));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as { port: number };
  return {
    server,
    port: addr.port,
    close() {
      for (const c of wss.clients) c.terminate();
      server.close();
    },
  };
}

function serve(ws: WebSocket, deps: ApiDeps): void {
  const following = new Set<string>();
  const send = (v: unknown) => {
    if (ws.readyState === ws.OPEN) ws.send(encodeApi(v));
  };
  const follower: JobFollower = {
    onLog: (job: string, line: LogLine) => send({ ev: "log", job, line }),
    onEnd: (job: string, rec: JobRecord) => {
      following.delete(job);
      send({ ev: "jobEnd", job: rec });
    },
  };
  ws.on("message", (data, isBinary) => {
    let req: any;
    try {
      if (!isBinary) throw new Error("frames must be binary msgpack");
      req = decodeApi(data as Buffer);
    } catch (e) {
      send({ rid: 0, ok: false, error: { code: "BAD_FRAME", message: `could not decode the frame: ${(e as Error).message}` } });
      return;
    }
    const problem = validateRequest(req);
    if (problem) {
      send({ rid: Number.isInteger(req?.rid) ? req.rid : 0, ok: false, error: { code: "BAD_REQUEST", message: problem } });
      return;
    }
    try {
      const value = handle(req, deps, follower, following);
      send({ rid: req.rid, ok: true, value });
    } catch (e) {
      send({ rid: req.rid, ok: false, error: { code: (e as { code?: string }).code ?? "FAILED", message: (e as Error).message } });
    }
  });
  ws.on("close", () => {
    for (const j of following) deps.jobs.unfollow(j, follower);
  });
  ws.on("error", () => {});
}

function handle(req: any, deps: ApiDeps, follower: JobFollower, following: Set<string>): unknown {
  switch (req.op) {
    case "ping":
      return "pong";
    case "nodes":
      return deps.nodes();
    case "status":
      return deps.status();
    case "hasBundle":
      return deps.jobs.hasBundle(req.hash);
    case "putBundle":
      deps.jobs.putBundle(req.hash, req.data);
      return true;
    case "submitJob": {
      if (req.data) deps.jobs.putBundle(req.hash, req.data);
      const job = deps.jobs.submit(req);
      // Subscribed before the driver can print anything (its output arrives on a later turn
      // of the event loop): every line reaches this client as an event, none from history.
      if (req.follow && deps.jobs.follow(job.id, follower)) {
        following.add(job.id);
        return { ...job, following: true };
      }
      return job;
    }
    case "listJobs":
      return deps.store.listJobs();
    case "getJob": {
      const j = deps.store.getJob(req.id);
      if (!j) throw new Error(`no job with id ${req.id} (see \`tray job list\`)`);
      return j;
    }
    case "jobLogs": {
      const j = deps.store.getJob(req.id);
      if (!j) throw new Error(`no job with id ${req.id} (see \`tray job list\`)`);
      // Subscribe before reading history so no line falls between the two.
      let followed = false;
      if (req.follow) {
        followed = deps.jobs.follow(req.id, follower);
        if (followed) following.add(req.id);
      }
      const lines = deps.store.logs(req.id, req.fromSeq ?? 0);
      return { lines, job: deps.store.getJob(req.id), following: followed };
    }
    case "unfollow":
      deps.jobs.unfollow(req.id, follower);
      following.delete(req.id);
      return true;
    case "stopJob":
      return deps.jobs.stop(req.id);
  }
  throw new Error(`unhandled op ${req.op}`);
}
