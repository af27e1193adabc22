// The `local` provider's launcher: the head agent (and worker node agents) as background
// processes on this machine that outlive the CLI. Logs and state in ~/.tray/clusters/<name>/.
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import type { ClusterConfig } from "../config/index.js";
import { UserError } from "../errors.js";
import { agentScript } from "./artifacts.js";
import { clusterDir, ensureToken, pidAlive, readState, tokenPath, writeState, type ClusterState, type NodeState } from "./state.js";
import type { Progress } from "./progress.js";
import { stablePort } from "./stable-port.js";

export interface LocalUpResult {
  state: ClusterState;
  changed: boolean;
}

/** Start one agent process detached from the CLI and wait for its ready file. */
async function startAgent(
  name: string,
  args: string[],
  dir: string,
  timeoutMs = 30_000,
): Promise<{ pid: number; ready: { pid: number; nodeId: string; listen: string } }> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const readyFile = path.join(dir, "ready.json");
  fs.rmSync(readyFile, { force: true });
  const log = fs.openSync(path.join(dir, "agent.log"), "a");
  // TRAY_CPU_PROF_DIR: profile the agent (written when it stops) — for performance work.
  const prof = process.env.TRAY_CPU_PROF_DIR ? ["--cpu-prof", "--cpu-prof-dir", process.env.TRAY_CPU_PROF_DIR] : [];
  const child = spawn(process.execPath, [...prof, agentScript(), "agent", ...args, "--state-dir", dir, "--ready-file", readyFile], {
    detached: true,
    stdio: ["ignore", log, log],
  });
  fs.closeSync(log);
  child.unref();
  let exited: string | undefined;
  child.once("exit", (code, sig) => (exited = sig ? `was killed by ${sig}` : `exited with code ${code}`));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (fs.existsSync(readyFile)) {
      const ready = JSON.parse(fs.readFileSync(readyFile, "utf8"));
      return { pid: child.pid!, ready };
    }
    if (exited) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const tail = tailOf(path.join(dir, "agent.log"));
  if (!exited) child.kill("SIGKILL");
  throw new UserError(`The ${name} agent ${exited ?? `was not ready after ${timeoutMs / 1000} s`}; its log (${path.join(dir, "agent.log")}) ends with: ${tail}`);
}

function tailOf(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").trim().split("\n").slice(-5).join(" | ") || "(empty)";
  } catch {
    return "(no log)";
  }
}

export async function upLocal(config: ClusterConfig, configPath: string, progress: Progress): Promise<LocalUpResult> {
  const name = config.cluster_name;
  const prev = readState(name);
  const prevHead = prev?.nodes.find((n) => n.kind === "head");
  let state: ClusterState;
  let changed = false;
  if (prev?.status === "up" && prevHead?.pid && pidAlive(prevHead.pid) && prev.head) {
    progress.update(prevHead.name, "running", `already up (pid ${prevHead.pid})`);
    state = prev;
  } else {
    ensureToken(name);
    const headType = config.available_node_types[config.head_node_type]!;
    const dir = path.join(clusterDir(name), "head");
    const headName = `${name}-head`;
    progress.update(headName, "starting");
    const args = [
      "--role", "head",
      "--cluster", name,
      "--token-file", tokenPath(name),
      "--node-name", headName,
      "--node-type", config.head_node_type,
      "--resources", JSON.stringify(headType.resources),
    ];
    if (config.object_store_memory) args.push("--object-store-memory", String(config.object_store_memory));
    // A head that comes back takes its old port again when it can: the node agents still
    // running keep re-dialling that address and rejoin by themselves.
    const oldPort = prev?.head?.apiPort;
    let started: Awaited<ReturnType<typeof startAgent>> | undefined;
    if (oldPort) started = await startAgent(headName, [...args, "--listen", `127.0.0.1:${oldPort}`], dir).catch(() => undefined);
    // A new head takes a port below the ephemeral range, which it can take again after a
    // crash (see stable-port.ts); the kernel's pick when none is free or the start fails.
    if (!started) {
      const port = await stablePort();
      if (port) started = await startAgent(headName, [...args, "--listen", `127.0.0.1:${port}`], dir).catch(() => undefined);
    }
    const { pid, ready } = started ?? (await startAgent(headName, [...args, "--listen", "127.0.0.1:0"], dir));
    const port = Number(ready.listen.split(":").pop());
    state = {
      name,
      provider: "local",
      configPath: path.resolve(configPath),
      head: { apiHost: "127.0.0.1", apiPort: port, nodeIp: "127.0.0.1" },
      nodes: [
        { name: headName, kind: "head", nodeType: config.head_node_type, id: ready.nodeId, privateIp: "127.0.0.1", pid },
        // node agents that outlived the head (they rejoin it if it kept its port)
        ...(port === oldPort ? (prev?.nodes ?? []).filter((n) => n.kind === "worker" && n.pid && pidAlive(n.pid)) : []),
      ],
      status: "up",
      updatedAt: "",
    };
    writeState(state);
    progress.update(headName, "ready", `pid ${pid}, API on 127.0.0.1:${port}`);
    changed = true;
  }
  // Worker node agents: min_workers of each worker type, each its own process with its own
  // store and worker pool, joining the head over its WebSocket like any remote node.
  const wanted: Array<{ name: string; type: string }> = [];
  for (const [type, t] of Object.entries(config.available_node_types)) {
    if (type === config.head_node_type && !t.min_workers) continue;
    for (let i = 1; i <= t.min_workers; i++) wanted.push({ name: `${name}-${type}-${i}`, type });
  }
  const keep = state.nodes.filter((n) => n.kind === "head" || (n.pid && pidAlive(n.pid) && wanted.some((w) => w.name === n.name)));
  const missing = wanted.filter((w) => !keep.some((n) => n.name === w.name));
  for (const n of keep) if (n.kind === "worker") progress.update(n.name, "running", `already up (pid ${n.pid})`);
  const started = await Promise.all(
    missing.map(async (w) => {
      progress.update(w.name, "starting");
      const t = config.available_node_types[w.type]!;
      const args = [
        "--role", "node",
        "--cluster", name,
        "--token-file", tokenPath(name),
        "--head", `ws://127.0.0.1:${state.head!.apiPort}`,
        "--listen", "127.0.0.1:0",
        "--node-name", w.name,
        "--node-type", w.type,
        // Every agent of a local cluster sees this machine's GPUs; left to detect them, each
        // would offer the same GPU and two numGpus: 1 tasks would run on one device at once
        // (seen on an H200). So the head alone detects them; a worker type gets GPUs only
        // where its resources name GPU.
        "--resources", JSON.stringify({ GPU: 0, ...t.resources }),
      ];
      if (config.object_store_memory) args.push("--object-store-memory", String(config.object_store_memory));
      const { pid, ready } = await startAgent(w.name, args, path.join(clusterDir(name), w.name));
      progress.update(w.name, "joined", `pid ${pid}`);
      return { name: w.name, kind: "worker" as const, nodeType: w.type, id: ready.nodeId, privateIp: "127.0.0.1", pid };
    }),
  );
  // Agents beyond what the YAML asks for now are stopped.
  for (const n of state.nodes) {
    if (n.kind === "worker" && n.pid && pidAlive(n.pid) && !wanted.some((w) => w.name === n.name)) {
      try { process.kill(n.pid, "SIGTERM"); } catch { /* gone */ }
      progress.update(n.name, "stopped", "no longer in the YAML");
      changed = true;
    }
  }
  if (started.length) changed = true;
  state.nodes = [...keep, ...started];
  state.status = "up";
  writeState(state);
  return { state, changed };
}

/**
 * Stop every agent of a local cluster (or only the worker node agents); their worker
 * processes go with them, and shared memory is removed.
 */
export async function downLocal(state: ClusterState, progress: Progress, workersOnly = false): Promise<string[]> {
  const removed: string[] = [];
  const alive = state.nodes.filter((n) => n.pid && pidAlive(n.pid) && (!workersOnly || n.kind === "worker"));
  await Promise.all(
    alive.map(async (n) => {
      progress.update(n.name, "stopping", `pid ${n.pid}`);
      try { process.kill(n.pid!, "SIGTERM"); } catch { /* already gone */ }
      const deadline = Date.now() + 10_000;
      while (pidAlive(n.pid!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (pidAlive(n.pid!)) {
        try { process.kill(-n.pid!, "SIGKILL"); } catch { /* group gone */ }
        try { process.kill(n.pid!, "SIGKILL"); } catch { /* gone */ }
      }
      removed.push(`${n.name} (pid ${n.pid})`);
      progress.update(n.name, "stopped");
    }),
  );
  if (workersOnly) {
    // The head stays; its state says which nodes remain.
    state.nodes = state.nodes.filter((n) => n.kind === "head");
    writeState(state);
    return removed;
  }
  // Shared memory of agents that died without cleaning up: this cluster's nodes only. Another
  // cluster of the same name (another TRAY_HOME, e.g. a benchmark running beside) has stores
  // named alike, and removing those broke its puts with ENOENT.
  const ours = new Set(state.nodes.map((n) => `tray-${state.name}-${n.id.slice(0, 8)}`));
  try {
    for (const f of fs.readdirSync("/dev/shm")) {
      if (ours.has(f)) {
        fs.rmSync(path.join("/dev/shm", f), { recursive: true, force: true });
        removed.push(`/dev/shm/${f}`);
      }
    }
  } catch { /* no /dev/shm */ }
  state.status = "down";
  writeState(state);
  return removed;
}
