// Per-cluster state on the machine that runs the CLI: ~/.tray/clusters/<name>/ (or
// $TRAY_HOME/clusters/<name>/). Holds state.json (nodes, head address, pinned host keys),
// the cluster token (mode 0600), logs of local agents, and a lock so that concurrent
// `up`/`down` on one cluster cannot race.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { UserError } from "../errors.js";

export function trayHome(): string {
  return process.env.TRAY_HOME || path.join(os.homedir(), ".tray");
}

export function clusterDir(name: string): string {
  return path.join(trayHome(), "clusters", name);
}

export interface NodeState {
  name: string;
  kind: "head" | "worker";
  nodeType: string;
  /** Provider instance id. */
  id: string;
  privateIp?: string;
  publicIp?: string;
  ssh?: { host: string; port: number; user: string };
  /** Content hashes of bootstrap steps done on this host (idempotent re-runs). */
  steps?: Record<string, string>;
  /** For local agents: the pid of the agent process. */
  pid?: number;
}

export interface ClusterState {
  name: string;
  provider: string;
  /** Absolute path of the YAML that made it. */
  configPath?: string;
  /** How the CLI reaches the head's API: a ws:// URL (local) or host:port behind an SSH tunnel. */
  head?: { apiHost: string; apiPort: number; nodeIp?: string; ssh?: { host: string; port: number; user: string } };
  nodes: NodeState[];
  /** Pinned SSH host keys, "host:port" -> "ssh-ed25519 AAAA..." (trust on first use). */
  hostKeys?: Record<string, string>;
  status: "up" | "down" | "starting" | "failed";
  updatedAt: string;
}

export function statePath(name: string): string {
  return path.join(clusterDir(name), "state.json");
}

export function readState(name: string): ClusterState | undefined {
  try {
    return JSON.parse(fs.readFileSync(statePath(name), "utf8")) as ClusterState;
  } catch (e: any) {
    if (e.code === "ENOENT") return undefined;
    throw new UserError(`The state file ${statePath(name)} is unreadable (${e.message}); delete it and run \`tray up\` again.`);
  }
}

export function writeState(state: ClusterState): void {
  const dir = clusterDir(state.name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  state.updatedAt = new Date().toISOString();
  const tmp = statePath(state.name) + `.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state, null, 2), { mode: 0o600 });
  fs.renameSync(tmp, statePath(state.name));
  fs.writeFileSync(path.join(trayHome(), "last-cluster"), state.name);
}

/** Name of the cluster the last `tray up` on this machine brought up. */
export function lastCluster(): string | undefined {
  try {
    return fs.readFileSync(path.join(trayHome(), "last-cluster"), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

export function listClusters(): ClusterState[] {
  const dir = path.join(trayHome(), "clusters");
  let names: string[] = [];
  try { names = fs.readdirSync(dir); } catch { return []; }
  return names.map((n) => readState(n)).filter((s): s is ClusterState => !!s);
}

/** Path of the cluster token (random per cluster, file mode 0600). */
export function tokenPath(name: string): string {
  return path.join(clusterDir(name), "token");
}

export function readToken(name: string): string | undefined {
  try { return fs.readFileSync(tokenPath(name), "utf8").trim(); } catch { return undefined; }
}

export function ensureToken(name: string): string {
  const existing = readToken(name);
  if (existing) return existing;
  fs.mkdirSync(clusterDir(name), { recursive: true, mode: 0o700 });
  const token = cryptoRandom();
  fs.writeFileSync(tokenPath(name), token + "\n", { mode: 0o600 });
  return token;
}

function cryptoRandom(): string {
  return globalThis.crypto.getRandomValues(new Uint8Array(32)).reduce((s, b) => s + b.toString(16).padStart(2, "0"), "");
}

/**
 * Run `fn` holding the cluster's lock (a directory created atomically with the holder's pid
 * and command). A lock whose holder process is gone is taken over; a live one makes us wait
 * up to `waitMs`, then refuse with a sentence naming the holder.
 */
export async function withClusterLock<T>(name: string, what: string, fn: () => Promise<T>, waitMs = 0): Promise<T> {
  const dir = clusterDir(name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const lock = path.join(dir, "lock");
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      fs.writeFileSync(path.join(lock, "owner.json"), JSON.stringify({ pid: process.pid, what, since: new Date().toISOString() }));
      break;
    } catch (e: any) {
      if (e.code !== "EEXIST") throw e;
      let owner: { pid: number; what: string; since: string } | undefined;
      try { owner = JSON.parse(fs.readFileSync(path.join(lock, "owner.json"), "utf8")); } catch { /* being written */ }
      if (owner && !pidAlive(owner.pid)) {
        fs.rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() >= deadline) {
        throw new UserError(
          `Cluster "${name}" is busy: \`tray ${owner?.what ?? "?"}\` (pid ${owner?.pid ?? "?"}) has held its lock since ${owner?.since ?? "just now"}; wait for it to finish or stop that process.`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e: any) {
    return e.code === "EPERM";
  }
  // A process that exited but was not reaped yet (its parent, often init, is slow) is a
  // zombie: signals still "reach" it, yet it is gone.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no procfs: trust the signal
  }
}
