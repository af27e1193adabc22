// `tray up` / `tray down` for clusters whose nodes are reached over SSH (ssh provider and the
// clouds). Provider-neutral: the provider finds or creates the machines, this file
// bootstraps whatever it returns, every host in parallel:
//
//   connect (host key checked/pinned) -> probe (home, node, arch, free disk, agent alive)
//   -> initialization_commands -> file_mounts (sftp) -> setup commands
//   -> agent bundle (+ node binary when needed) -> token file (0600)
//   -> start the agent detached (setsid, pid file) -> wait until it joined the head
//
// Each step is cached per host by content hash in NodeState.steps, so a second `up` with an
// unchanged YAML runs one probe per host and restarts nothing.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Duplex } from "node:stream";
import { fileURLToPath } from "node:url";
import type { ClusterConfig } from "../config/types.js";
import { UserError, isUserError } from "../errors.js";
import type { InstanceRecord, Provider, RemovedResource, RunRequest } from "../providers/interface.js";
import { tunnelOver } from "../client/tunnel.js";
import { shq, type ExecOptions, type ExecResult, type SshConnection } from "../ssh/client.js";
import { connectNode, saveSshAuth } from "../ssh/cluster.js";
import { hostKeyId } from "../ssh/hostkeys.js";
import type { Progress } from "./progress.js";
import { clusterDir, ensureToken, readState, statePath, withClusterLock, writeState, type ClusterState, type NodeState } from "./state.js";

/**
 * Port of the head's API on its private address: 0 = the agent picks a free one (several
 * clusters can share a host) and reports it in its ready file; TRAY_HEAD_PORT or
 * UpRemoteOptions.headPort fix it (e.g. for a firewall rule).
 */
export const DEFAULT_HEAD_PORT = 0;
/** Where tray keeps its files on a host, relative to the login user's home. */
export const REMOTE_ROOT = ".tray";

export interface UpRemoteOptions {
  /** Override cluster_name (`tray up -n NAME`). */
  name?: string;
  /** Absolute path of the YAML (recorded in the state). */
  configPath?: string;
  /** Do not restart agents that are running, even if something changed (Ray's --no-restart). */
  noRestart?: boolean;
  /** Skip initialization/file mounts/setup; just (re)start the agents (Ray's --restart-only). */
  restartOnly?: boolean;
  /** Wait this long for the cluster lock held by another up/down (default 0: refuse at once). */
  lockWaitMs?: number;
  /** Folder holding agent.js and better_sqlite3.node (default: found next to tray's code). */
  distDir?: string;
  /** How long an agent may take to join the head (default 60 s). */
  joinTimeoutMs?: number;
  /** Connect to the head API (default: HeadClient over the SSH tunnel). Tests may replace it. */
  headConnector?: HeadConnector;
  /** Port of the head API (default TRAY_HEAD_PORT, else DEFAULT_HEAD_PORT: picked by the agent). */
  headPort?: number;
}

export interface HostReport {
  name: string;
  kind: "head" | "worker";
  host: string;
  /** pending while `up` runs; skipped: not started because the head failed. */
  status: "pending" | "joined" | "unchanged" | "failed" | "skipped";
  /** Steps that ran this time ("setup:1", "agent", "start", ...). */
  ran: string[];
  error?: string;
}

export interface UpRemoteResult {
  name: string;
  headIp: string;
  hosts: HostReport[];
  elapsedMs: number;
}

/** The minimal view of the head API that `up` needs (HeadClient satisfies it). */
export interface HeadView {
  nodes(): Promise<Array<{ name?: string; nodeId?: string; alive?: boolean }>>;
  close(): void | Promise<void>;
}
export type HeadConnector = (o: { url: string; token: string; createConnection: () => Duplex }) => Promise<HeadView>;

// ------------------------------------------------------------------ pure parts (unit-tested)

export function sha(...parts: Array<string | Buffer>): string {
  const h = createHash("sha256");
  for (const p of parts) {
    h.update(typeof p === "string" ? p : p);
    h.update("\0");
  }
  return h.digest("hex").slice(0, 16);
}

export interface StepInputs {
  initialization: string[];
  /** file_mounts manifest hash (see mountsManifest). */
  mounts: string;
  /** setup_commands followed by head_ or worker_setup_commands. */
  setup: string[];
  agent: string;
  token: string;
  /** The agent command line (without paths that depend on the host's home). */
  start: string;
}

/**
 * The content hash of every step for one host. Setup commands are chained: command i's hash
 * covers commands 0..i, so changing one re-runs it and the ones after it (which may depend on
 * it), never the ones before. "start" covers everything before it: any change restarts the agent.
 */
export function stepHashes(i: StepInputs): Record<string, string> {
  const out: Record<string, string> = {};
  out.init = sha("init", ...i.initialization);
  out.mounts = sha("mounts", i.mounts);
  let chain = "setup";
  i.setup.forEach((cmd, n) => {
    chain = sha(chain, cmd);
    out[`setup:${n}`] = chain;
  });
  out.agent = sha("agent", i.agent);
  out.token = sha("token", i.token);
  out.start = sha("start", out.init, out.mounts, chain, out.agent, out.token, i.start);
  return out;
}

/** Which steps must run, given what the host has done before (`done`) and the flags. */
export function stepsToRun(want: Record<string, string>, done: Record<string, string> | undefined, o: { restartOnly?: boolean; noRestart?: boolean; agentAlive: boolean }): string[] {
  const prev = done ?? {};
  const run: string[] = [];
  for (const [k, v] of Object.entries(want)) {
    if (k === "start") continue;
    if (o.restartOnly && (k === "init" || k === "mounts" || k.startsWith("setup:"))) continue;
    if (prev[k] !== v) run.push(k);
  }
  const changed = prev.start !== want.start;
  if (!o.agentAlive || o.restartOnly || (changed && !o.noRestart)) run.push("start");
  return run;
}

/** A stable description of the local side of file_mounts: paths, sizes, mtimes, modes. */
export function mountsManifest(mounts: Record<string, string>): string {
  const lines: string[] = [];
  const walk = (local: string, rel: string) => {
    let st: fs.Stats;
    try { st = fs.statSync(local); } catch { lines.push(`missing ${rel}`); return; }
    if (st.isDirectory()) {
      lines.push(`d ${rel} ${st.mode & 0o777}`);
      for (const e of fs.readdirSync(local).sort()) walk(path.join(local, e), `${rel}/${e}`);
    } else {
      lines.push(`f ${rel} ${st.size} ${Math.floor(st.mtimeMs)} ${st.mode & 0o777}`);
    }
  };
  for (const remote of Object.keys(mounts).sort()) walk(mounts[remote]!, remote);
  return lines.join("\n");
}

/** Parse the probe script's key=value output. */
export function parseProbe(out: string): Probe {
  const kv: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) kv[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  const [nodeVersion, nodeAbi] = (kv.node ?? "").split(" ");
  return {
    home: kv.home ?? "",
    arch: kv.arch ?? "",
    nodePath: kv.nodepath || undefined,
    nodeVersion: nodeVersion || undefined,
    nodeAbi: nodeAbi || undefined,
    freeKiB: kv.df ? Number(kv.df) : undefined,
    agentPid: kv.alive ? Number(kv.alive) : undefined,
    ready: parseReady(kv.ready),
    hostname: kv.hostname ?? "",
  } as Probe;
}

function parseReady(s: string | undefined): { pid?: number; nodeId?: string; listen?: string } | undefined {
  if (!s) return undefined;
  try { return JSON.parse(s); } catch { return undefined; }
}

/** "10.0.0.1:6380" -> 6380 */
export function portOf(listen: string | undefined): number | undefined {
  const m = /:(\d+)$/.exec(listen ?? "");
  return m ? Number(m[1]) : undefined;
}

export interface Probe {
  home: string;
  arch: string;
  nodePath?: string;
  nodeVersion?: string;
  nodeAbi?: string;
  freeKiB?: number;
  agentPid?: number;
  /** The running agent's ready file. */
  ready?: { pid?: number; nodeId?: string; listen?: string };
  hostname: string;
}

/** Can the host run our agent with its own node? (>= 20, and our ABI for the native addon) */
export function hostNodeUsable(p: Pick<Probe, "nodeVersion" | "nodeAbi">, ourAbi = process.versions.modules): boolean {
  if (!p.nodeVersion) return false;
  const major = Number(p.nodeVersion.replace(/^v/, "").split(".")[0]);
  return major >= 20 && p.nodeAbi === ourAbi;
}

/** uname -m -> process.arch */
export function unameToArch(m: string): string {
  return ({ x86_64: "x64", amd64: "x64", aarch64: "arm64", arm64: "arm64", armv7l: "arm" } as Record<string, string>)[m] ?? m;
}

// ------------------------------------------------------------------ agent bundle

interface AgentBundle {
  dir: string;
  files: Array<{ name: string; path: string; size: number }>;
  hash: string;
  bytes: number;
}

const bundleCache = new Map<string, AgentBundle>();

export function findDistDir(given?: string): string {
  const candidates: string[] = [];
  if (given) candidates.push(given);
  if (process.env.TRAY_DIST) candidates.push(process.env.TRAY_DIST);
  const here = path.dirname(fileURLToPath(import.meta.url));
  candidates.push(here, path.resolve(here, ".."), path.resolve(here, "../../dist"), path.resolve(here, "../dist"));
  for (const c of candidates) if (fs.existsSync(path.join(c, "agent.js"))) return c;
  throw new UserError(`The agent bundle (dist/agent.js) is missing; build it with \`npm run build\` (looked in ${candidates.join(", ")}).`);
}

function agentBundle(distDir: string): AgentBundle {
  // tray_native.node is optional (built where a compiler was): hosts without it use plain reads.
  const names = ["agent.js", "better_sqlite3.node", ...(fs.existsSync(path.join(distDir, "tray_native.node")) ? ["tray_native.node"] : [])];
  const files = names.map((name) => {
    const p = path.join(distDir, name);
    let st: fs.Stats;
    try { st = fs.statSync(p); } catch { throw new UserError(`${p} is missing; build the agent with \`npm run build\`.`); }
    return { name, path: p, size: st.size, mtime: st.mtimeMs };
  });
  const key = files.map((f) => `${f.path}:${f.size}:${f.mtime}`).join("|");
  const hit = bundleCache.get(key);
  if (hit) return hit;
  const h = createHash("sha256");
  for (const f of files) h.update(f.name).update(fs.readFileSync(f.path));
  const b: AgentBundle = { dir: distDir, files: files.map(({ name, path: p, size }) => ({ name, path: p, size })), hash: h.digest("hex").slice(0, 16), bytes: files.reduce((s, f) => s + f.size, 0) };
  bundleCache.set(key, b);
  return b;
}

// ------------------------------------------------------------------ remote scripts

/**
 * A one-line command for sh whatever the login shell is (tcsh, fish ...). Scripts of several
 * lines travel on stdin instead (runScript/execScript): csh cannot quote a newline.
 */
export function sh(line: string): string {
  if (line.includes("\n")) throw new Error("bug: sh() takes one line; use runScript for scripts");
  return `sh -c ${shq(line)}`;
}

/** Run a multi-line sh script (sent on stdin to `sh -s`, so any login shell works). */
function execScript(conn: SshConnection, script: string, opts: Omit<ExecOptions, "stdin"> = {}): Promise<ExecResult> {
  return conn.exec("sh -s", { ...opts, stdin: script + "\n" });
}

function runScript(conn: SshConnection, script: string, what: string): Promise<string> {
  return conn.run("sh -s", what, { stdin: script + "\n" });
}

/**
 * The script that runs a user's setup command as Ray runs it: in a bash login shell (so
 * ~/.profile's PATH, conda, nvm ... apply), or sh where there is no bash. Fed to `sh -s`;
 * the command's own stdin is /dev/null (not the rest of the script).
 */
export function userScript(cmd: string): string {
  return `if command -v bash >/dev/null 2>&1; then exec bash --login -c ${shq(cmd)} </dev/null; else exec sh -c ${shq(cmd)} </dev/null; fi`;
}

const ALIVE_FN = `alive() { [ -n "$1" ] && [ -r /proc/$1/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status; }`;

function probeScript(stateDir: string): string {
  return [
    `printf 'home=%s\\n' "$HOME"`,
    `printf 'hostname=%s\\n' "$(hostname 2>/dev/null)"`,
    `printf 'arch=%s\\n' "$(uname -m)"`,
    // our own node first, then the PATH, then a login shell's PATH (nvm, /opt/...)
    `N="$HOME/${REMOTE_ROOT}/node/bin/node"; [ -x "$N" ] || N="$(command -v node 2>/dev/null)"`,
    `[ -n "$N" ] || N="$(bash --login -c 'command -v node' 2>/dev/null </dev/null | tail -n 1)"`,
    `[ -n "$N" ] && [ -x "$N" ] || N=""`,
    `if [ -n "$N" ]; then printf 'nodepath=%s\\n' "$N"; printf 'node=%s\\n' "$("$N" -p 'process.versions.node+" "+process.versions.modules' 2>/dev/null)"; fi`,
    `mkdir -p "$HOME/${REMOTE_ROOT}" 2>/dev/null; printf 'df=%s\\n' "$(df -Pk "$HOME/${REMOTE_ROOT}" 2>/dev/null | awk 'NR==2{print $4}')"`,
    ALIVE_FN,
    `P=$(cat ${stateDir}/agent.pid 2>/dev/null); if alive "$P"; then printf 'alive=%s\\n' "$P"; printf 'ready=%s\\n' "$(tr -d '\\n' < ${stateDir}/ready.json 2>/dev/null)"; fi`,
    `true`,
  ].join("\n");
}

function stopScript(stateDir: string, cluster: string): string {
  const T = `"\${TMPDIR:-/tmp}"`;
  return [
    ALIVE_FN,
    `P=$(cat ${stateDir}/agent.pid 2>/dev/null)`,
    `if alive "$P"; then`,
    `  kill -TERM "$P" 2>/dev/null`,
    `  i=0; while alive "$P" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`,
    `  if alive "$P"; then kill -KILL -- -"$P" 2>/dev/null; kill -KILL "$P" 2>/dev/null; echo killed; else echo stopped; fi`,
    `else echo not-running; fi`,
    // anything left in the agent's process group (workers) goes too
    `[ -n "$P" ] && kill -KILL -- -"$P" 2>/dev/null`,
    // what a killed agent could not remove: its sockets and its object store in /dev/shm
    // (named after the agent's pid and instance id: tray-<pid>-<id>.sock, tray-<cluster>-<id>;
    // its workers' and actors' sockets: tray-<letter>-<pid>-<id>.sock)
    `if [ -n "$P" ]; then for f in ${T}/tray-"$P"-*.sock; do [ -e "$f" ] || continue; id=\${f##*/tray-"$P"-}; id=\${id%.sock}; rm -rf /dev/shm/tray-${shq(cluster)}-"$id" ${T}/tray-${shq(cluster)}-"$id"; rm -f "$f"; done; rm -f ${T}/tray-*-"$P"-*.sock; fi`,
    `true`,
  ].join("\n");
}

function startScript(stateDir: string, cluster: string, cmd: string): string {
  return [
    ALIVE_FN,
    `mkdir -p ${stateDir} && cd ${stateDir} || exit 5`,
    stopScript(stateDir, cluster).replace(/echo (killed|stopped|not-running)/g, ":"),
    `rm -f ready.json`,
    // a new session: no SIGHUP when the SSH session ends (nohup where util-linux is missing)
    `if command -v setsid >/dev/null 2>&1; then setsid ${cmd} >> agent.log 2>&1 < /dev/null & else nohup ${cmd} >> agent.log 2>&1 < /dev/null & fi`,
    `P=$!; echo $P > agent.pid`,
    `i=0; while [ $i -lt 1200 ]; do`,
    `  if [ -s ready.json ]; then cat ready.json; exit 0; fi`,
    `  if ! alive $P; then echo TRAY_AGENT_DIED; tail -n 20 agent.log; exit 3; fi`,
    `  sleep 0.05; i=$((i+1))`,
    `done`,
    `echo TRAY_AGENT_TIMEOUT; tail -n 20 agent.log; exit 4`,
  ].join("\n");
}

/** Remove what tray installed on a host for `cluster`; the shared parts only when no cluster is left. */
function removeScript(cluster: string): string {
  const root = `"$HOME/${REMOTE_ROOT}"`;
  return [
    `rm -rf ${root}/nodes/${shq(cluster)}`,
    `rmdir ${root}/nodes 2>/dev/null || true`,
    `if [ ! -d ${root}/nodes ]; then rm -rf ${root}/agent ${root}/node ${root}/tmp; rmdir ${root} 2>/dev/null || true; fi`,
    `true`,
  ].join("\n");
}

// ------------------------------------------------------------------ up

interface HostCtx {
  node: NodeState;
  conn?: SshConnection;
  probe?: Probe;
  want: Record<string, string>;
  inputs?: StepInputs;
  run: string[];
  nodeBin?: string;
  agentDir?: string;
  stateDir?: string;
  ready?: { pid?: number; nodeId?: string; listen?: string };
  report: HostReport;
}

function remoteStateDir(home: string, cluster: string): string {
  return `${home}/${REMOTE_ROOT}/nodes/${cluster}`;
}

function workerNodeType(config: ClusterConfig): string {
  const types = Object.keys(config.available_node_types ?? {});
  return types.find((t) => t !== config.head_node_type) ?? config.head_node_type;
}

/** How many workers of each type the cluster should have now. */
function desiredWorkers(config: ClusterConfig, provider: Provider): Array<{ nodeType: string; count: number }> {
  if (!provider.capabilities.creates) {
    // A fixed list of hosts (ssh): every listed worker host is used.
    const ips = (config.provider as { worker_ips?: string[] }).worker_ips ?? [];
    return ips.length ? [{ nodeType: workerNodeType(config), count: ips.length }] : [];
  }
  return Object.entries(config.available_node_types ?? {})
    .filter(([t]) => t !== config.head_node_type)
    .map(([nodeType, nt]) => ({ nodeType, count: nt.min_workers ?? 0 }))
    .filter((w) => w.count > 0);
}

function toNodeState(r: InstanceRecord, prev?: NodeState): NodeState {
  return {
    name: r.name,
    kind: r.kind,
    nodeType: r.nodeType,
    id: r.id,
    ...(r.privateIp ? { privateIp: r.privateIp } : {}),
    ...(r.publicIp ? { publicIp: r.publicIp } : {}),
    ...(r.ssh ? { ssh: r.ssh } : {}),
    ...(prev?.steps ? { steps: prev.steps } : {}),
  };
}

function nodeAddress(n: NodeState): string {
  return n.privateIp ?? n.ssh?.host ?? n.id;
}

async function defaultHeadConnector(o: { url: string; token: string; createConnection: () => Duplex }): Promise<HeadView> {
  const { HeadClient } = await import("../client/head-client.js");
  return HeadClient.connect({ url: o.url, token: o.token, createConnection: o.createConnection, timeoutMs: 5000 });
}

export async function upRemote(config: ClusterConfig, provider: Provider, opts: UpRemoteOptions, progress: Progress): Promise<UpRemoteResult> {
  const t0 = Date.now();
  const name = opts.name ?? config.cluster_name;
  if (!config.auth) throw new UserError(`auth.ssh_user and auth.ssh_private_key are required for provider type ${config.provider.type}.`);
  const auth = config.auth;
  return withClusterLock(name, "up", async () => {
    const prev = readState(name);
    const state: ClusterState = prev ?? { name, provider: config.provider.type, nodes: [], status: "starting", updatedAt: "" };
    state.provider = config.provider.type;
    if (opts.configPath) state.configPath = opts.configPath;
    state.status = "starting";
    const token = ensureToken(name);
    saveSshAuth(name, { user: auth.ssh_user, privateKeyPath: auth.ssh_private_key, ...(config.provider.known_hosts_file ? { knownHostsFile: config.provider.known_hosts_file } : {}) });
    const bundle = agentBundle(findDistDir(opts.distDir));
    const listenPort = opts.headPort ?? (Number(process.env.TRAY_HEAD_PORT) || DEFAULT_HEAD_PORT);
    /** The head API's port once known (from the running head's ready file, or after starting it). */
    let headPort = listenPort;

    // ---- machines: find what exists, create what is missing
    progress.log(`tray up ${name}: provider ${provider.name}`);
    await provider.bootstrap();
    const existing = await provider.queryInstances({ clusterName: name });
    const byName = new Map(existing.map((r) => [r.name, r]));
    const requests: RunRequest[] = [];
    const headName = `${name}-head`;
    if (!existing.some((r) => r.kind === "head")) {
      requests.push({ clusterName: name, nodeType: config.head_node_type, kind: "head", count: 1, nodeConfig: config.available_node_types[config.head_node_type]?.node_config ?? {}, names: [headName], tags: {} });
    }
    const wantWorkers = desiredWorkers(config, provider);
    for (const w of wantWorkers) {
      const have = existing.filter((r) => r.kind === "worker" && r.nodeType === w.nodeType).length;
      const missing = w.count - have;
      if (missing <= 0) continue;
      const names: string[] = [];
      for (let i = 1; names.length < missing; i++) {
        const n = `${name}-worker-${i}`;
        if (!byName.has(n) && !requests.some((r) => r.names.includes(n))) names.push(n);
      }
      requests.push({ clusterName: name, nodeType: w.nodeType, kind: "worker", count: missing, nodeConfig: config.available_node_types[w.nodeType]?.node_config ?? {}, names, tags: {} });
    }
    for (const r of requests) for (const n of r.names) progress.update(n, provider.capabilities.creates ? "creating" : "assigning");
    const created = requests.length ? await provider.runInstances(requests) : [];
    if (provider.capabilities.creates) {
      // A new VM may reuse the address of one that is gone: its key was never seen before.
      for (const r of created) if (r.ssh && state.hostKeys) delete state.hostKeys[hostKeyId(r.ssh.host, r.ssh.port)];
    }
    let records = [...existing, ...created];
    records = await provider.waitInstances(records.map((r) => r.id), "running");

    // Hosts no longer wanted (a worker IP removed from the YAML): stop them below.
    const wantedIds = new Set(records.map((r) => r.id));
    const prevNodes = new Map(state.nodes.map((n) => [n.name, n]));
    state.nodes = records.map((r) => toNodeState(r, prevNodes.get(r.name)));
    const stale = [...prevNodes.values()].filter((n) => !wantedIds.has(n.id) && !state.nodes.some((m) => m.name === n.name));
    const head = state.nodes.find((n) => n.kind === "head");
    if (!head) throw new Error("bug: no head node after runInstances");
    state.head = { apiHost: nodeAddress(head), apiPort: prev?.head?.apiPort ?? headPort, nodeIp: nodeAddress(head), ...(head.ssh ? { ssh: head.ssh } : {}) };
    writeState(state);

    // ---- per-host preparation, in parallel
    const resources = (type: string) => JSON.stringify(config.available_node_types[type]?.resources ?? {});
    const setupFor = (kind: "head" | "worker") => [...config.setup_commands, ...(kind === "head" ? config.head_setup_commands : config.worker_setup_commands)];
    const mountsHash = sha(mountsManifest(config.file_mounts ?? {}));
    const hosts: HostCtx[] = state.nodes
      .slice()
      .sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === "head" ? -1 : 1))
      .map((node) => ({ node, want: {}, run: [], report: { name: node.name, kind: node.kind, host: node.ssh?.host ?? nodeAddress(node), status: "pending", ran: [] } }));

    const agentArgs = (h: HostCtx): string => {
      const n = h.node;
      const ip = nodeAddress(n);
      const a = [
        "agent", "--role", n.kind === "head" ? "head" : "node",
        "--cluster", name,
        "--state-dir", h.stateDir!,
        "--token-file", `${h.stateDir}/token`,
        "--listen", n.kind === "head" ? `${ip}:${listenPort}` : `${ip}:0`,
        ...(n.kind === "head" ? [] : ["--head", `ws://${state.head!.apiHost}:${headPort}`]),
        "--node-name", n.name,
        "--node-type", n.nodeType,
        "--node-ip", ip,
        "--resources", resources(n.nodeType),
        "--ready-file", `${h.stateDir}/ready.json`,
        ...(config.object_store_memory ? ["--object-store-memory", String(config.object_store_memory)] : []),
      ];
      return a.map(shq).join(" ");
    };

    const logFile = (n: NodeState) => path.join(clusterDir(name), "logs", `${n.name}.log`);
    const fail = (h: HostCtx, e: unknown) => {
      const msg = isUserError(e) ? e.message : `${(e as Error)?.stack ?? e}`;
      h.report.status = "failed";
      h.report.error = msg;
      progress.fail(h.node.name, msg);
    };

    const prepare = async (h: HostCtx): Promise<void> => {
      const n = h.node;
      progress.update(n.name, "connecting", n.ssh ? `${n.ssh.user}@${n.ssh.host}` : "");
      h.conn = await connectWithRetry(state, n, provider.capabilities.creates ? sshWaitMs() : 0, progress);
      writeState(state); // a newly pinned key is kept even if a later step fails
      h.probe = parseProbe(await runScript(h.conn, probeScript(`"$HOME/${REMOTE_ROOT}/nodes/${name}"`), "probing the host"));
      const p = h.probe;
      h.stateDir = remoteStateDir(p.home, name);
      h.agentDir = `${p.home}/${REMOTE_ROOT}/agent/${bundle.hash}`;
      const useOwnNode = !hostNodeUsable(p) || p.nodePath === `${p.home}/${REMOTE_ROOT}/node/bin/node`;
      const nodeVersion = process.version;
      h.nodeBin = useOwnNode ? `${p.home}/${REMOTE_ROOT}/node/bin/node` : p.nodePath!;
      const agentKey = `${bundle.hash} node=${useOwnNode ? `tray-${nodeVersion}-${process.arch}` : `host`}`;
      // The start step is decided in start(): a worker's command line names the head's port.
      h.inputs = { initialization: config.initialization_commands, mounts: mountsHash, setup: setupFor(n.kind), agent: agentKey, token, start: "" };
      h.want = stepHashes(h.inputs);
      h.run = stepsToRun(h.want, n.steps, { ...(opts.restartOnly ? { restartOnly: true } : {}), agentAlive: true }).filter((k) => k !== "start");
      // drop steps recorded for setup commands that no longer exist
      const steps: Record<string, string> = {};
      for (const [k, v] of Object.entries(n.steps ?? {})) if (k in h.want) steps[k] = v;
      n.steps = steps;
      const mark = (k: string) => {
        n.steps = { ...(n.steps ?? {}), [k]: h.want[k]! };
        h.report.ran.push(k);
        writeState(state);
      };

      if (h.run.includes("init") && config.initialization_commands.length) {
        await runCommands(h, config.initialization_commands, "initialization", progress, logFile(n));
      }
      if (h.run.includes("init")) mark("init");
      if (h.run.includes("mounts")) {
        if (Object.keys(config.file_mounts ?? {}).length) {
          progress.update(n.name, "file mounts");
          await uploadMounts(h.conn, p.home, config.file_mounts);
        }
        mark("mounts");
      }
      const setup = setupFor(n.kind);
      for (let i = 0; i < setup.length; i++) {
        const k = `setup:${i}`;
        if (!h.run.includes(k)) continue;
        await runCommands(h, [setup[i]!], `setup ${i + 1}/${setup.length}`, progress, logFile(n));
        mark(k);
      }
      if (h.run.includes("agent")) {
        const need = bundle.bytes + (useOwnNode ? fs.statSync(process.execPath).size : 0);
        const needKiB = Math.ceil(need / 1024) + 64 * 1024; // + 64 MiB for logs and the agent's state
        if (p.freeKiB !== undefined && p.freeKiB < needKiB) {
          throw new UserError(
            `${n.ssh?.host ?? n.name} has only ${Math.floor(p.freeKiB / 1024)} MiB free in ${p.home}/${REMOTE_ROOT}; the agent needs about ${Math.ceil(needKiB / 1024)} MiB: free some space on the host.`,
          );
        }
        if (useOwnNode) {
          const arch = unameToArch(p.arch);
          if (arch !== process.arch || process.platform !== "linux") {
            throw new UserError(
              `${n.ssh?.host ?? n.name} has no Node.js >= 20 with module ABI ${process.versions.modules}${p.nodeVersion ? ` (it has ${p.nodeVersion})` : ""}, and it is ${p.arch} while this machine's node is ${process.platform}-${process.arch}, so tray cannot bring its own: install Node ${process.versions.node.split(".")[0]} on the host.`,
            );
          }
          progress.update(n.name, "uploading node", `${Math.round(fs.statSync(process.execPath).size / 1048576)} MiB`);
          await h.conn.mkdirp(`${p.home}/${REMOTE_ROOT}/node/bin`, 0o755);
          const tmp = `${h.nodeBin}.${process.pid}.tmp`;
          await h.conn.upload(process.execPath, tmp, 0o755);
          await h.conn.run(sh(`mv -f ${shq(tmp)} ${shq(h.nodeBin)}`), "installing node");
        }
        progress.update(n.name, "uploading agent", `${Math.round(bundle.bytes / 1024)} KiB`);
        const present = await h.conn.exec(sh(`test -s ${shq(h.agentDir)}/.complete`));
        if (present.code !== 0) {
          const tmpDir = `${h.agentDir}.${process.pid}.tmp`;
          await h.conn.run(sh(`rm -rf ${shq(tmpDir)} && mkdir -p -m 700 ${shq(tmpDir)}`), "creating the agent folder");
          await Promise.all(bundle.files.map((f) => h.conn!.upload(f.path, `${tmpDir}/${f.name}`, f.name.endsWith(".node") ? 0o755 : 0o644)));
          // another `up` (another cluster on this host) may have installed it meanwhile: never
          // replace a complete install that agents may be running from
          const [A, T] = [shq(h.agentDir), shq(tmpDir)];
          await h.conn.run(sh(`echo ${bundle.hash} > ${T}/.complete && { [ -s ${A}/.complete ] || { rm -rf ${A} && mv ${T} ${A}; }; } && rm -rf ${T}`), "installing the agent");
        }
        mark("agent");
      }
      if (h.run.includes("token")) {
        await h.conn.run(sh(`umask 077 && mkdir -p ${shq(h.stateDir)} && cat > ${shq(h.stateDir)}/token.tmp && mv -f ${shq(h.stateDir)}/token.tmp ${shq(h.stateDir)}/token`), "writing the token file", { stdin: token + "\n" });
        mark("token");
      }
    };

    const start = async (h: HostCtx, force = false): Promise<void> => {
      const n = h.node;
      h.want = stepHashes({ ...h.inputs!, start: agentArgs(h) });
      const flags = { ...(opts.restartOnly ? { restartOnly: true } : {}), ...(opts.noRestart ? { noRestart: true } : {}), agentAlive: h.probe?.agentPid !== undefined };
      if (force || stepsToRun(h.want, n.steps, flags).includes("start")) h.run.push("start");
      if (!h.run.includes("start")) {
        if (n.kind === "head") headPort = portOf(h.probe?.ready?.listen) ?? state.head?.apiPort ?? listenPort;
        h.report.status = "unchanged";
        progress.update(n.name, "running", "unchanged");
        return;
      }
      progress.update(n.name, h.probe?.agentPid ? "restarting agent" : "starting agent");
      const cmd = `${shq(h.nodeBin!)} ${shq(`${h.agentDir}/agent.js`)} ${agentArgs(h)}`;
      const r = await execScript(h.conn!, startScript(shq(h.stateDir!), name, cmd));
      if (r.code !== 0) {
        const out = (r.stdout + r.stderr).replace(/TRAY_AGENT_(DIED|TIMEOUT)\n?/, "").trim();
        const why = r.stdout.includes("TRAY_AGENT_DIED") ? "exited at start" : r.stdout.includes("TRAY_AGENT_TIMEOUT") ? "did not become ready within 60 s" : `could not be started (exit code ${r.code})`;
        throw new UserError(`${n.ssh?.host ?? n.name}: the tray agent ${why}; the end of ${h.stateDir}/agent.log:\n${indent(out || "(empty)")}`);
      }
      try { h.ready = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}"); } catch { h.ready = {}; }
      if (n.kind === "head") {
        const port = portOf(h.ready?.listen);
        if (!port) throw new UserError(`${n.ssh?.host ?? n.name}: the head agent's ready file names no port (${r.stdout.trim().slice(0, 200)}).`);
        headPort = port;
      }
      n.steps = { ...(n.steps ?? {}), start: h.want.start! };
      h.report.ran.push("start");
      writeState(state);
      progress.update(n.name, "started", h.ready?.pid ? `pid ${h.ready.pid}` : "");
    };

    const headHost = hosts.find((h) => h.node.kind === "head")!;
    const workers = hosts.filter((h) => h !== headHost);
    const settle = async (h: HostCtx, f: (h: HostCtx) => Promise<void>) => {
      if (h.report.status === "failed") return;
      try { await f(h); } catch (e) { fail(h, e); }
    };

    // Prepare every host at once; start the head as soon as it is prepared (workers need it).
    const headStarted = settle(headHost, prepare).then(async () => {
      await settle(headHost, start);
      state.head = { ...state.head!, apiPort: headPort };
      writeState(state);
    });
    await Promise.all([
      headStarted,
      ...workers.map(async (w) => {
        await settle(w, prepare);
        await headStarted;
        if (w.report.status === "failed") return;
        if (headHost.report.status === "failed") {
          w.report.status = "skipped";
          progress.update(w.node.name, "waiting", "for the head, which failed");
          return;
        }
        // a restarted head: restart workers too, so they join it (unless --no-restart)
        await settle(w, (x) => start(x, headHost.report.ran.includes("start") && !opts.noRestart));
      }),
    ]);

    // ---- wait until every running agent has joined the head
    const alive = hosts.filter((h) => h.report.status !== "failed" && h.report.status !== "skipped");
    if (headHost.report.status !== "failed" && alive.length) {
      for (const h of alive) if (h.report.ran.includes("start")) progress.update(h.node.name, "joining");
      try {
        await waitJoined(name, headHost.conn!, state.head.apiHost, headPort, token, alive, opts, progress);
      } catch (e) {
        for (const h of alive) if (h.report.status !== "joined" && h.report.status !== "unchanged") fail(h, e);
      }
    }

    // ---- hosts no longer in the YAML: stop their agents
    for (const n of stale) {
      progress.update(n.name, "removing", "no longer in the cluster config");
      try {
        const c = await connectNode(state, n, { pin: false, save: false });
        await runScript(c, stopScript(`"$HOME/${REMOTE_ROOT}/nodes/${name}"`, name) + "\n" + removeScript(name), "stopping the agent");
        c.close();
        progress.update(n.name, "removed");
      } catch (e) {
        progress.fail(n.name, isUserError(e) ? e.message : String(e));
      }
    }
    if (stale.length) await provider.terminateInstances(stale.map((n) => n.id));

    for (const h of hosts) h.conn?.close();
    const failed = hosts.filter((h) => h.report.status !== "joined" && h.report.status !== "unchanged");
    state.status = failed.length ? "failed" : "up";
    writeState(state);
    progress.done();
    const result: UpRemoteResult = { name, headIp: state.head.apiHost, hosts: hosts.map((h) => h.report), elapsedMs: Date.now() - t0 };
    if (failed.length) {
      const ok = hosts.filter((h) => !failed.includes(h));
      const first = failed.find((h) => h.report.error) ?? failed[0]!;
      throw new UserError(
        `${failed.length} of ${hosts.length} hosts did not come up (${failed.map((h) => h.report.host).join(", ")})${ok.length ? `; up: ${ok.map((h) => h.report.host).join(", ")}` : ""}. ${first.report.error ?? "the head failed first"}`,
        { hint: "fix the cause and run `tray up` again: steps already done on a host are not repeated" },
      );
    }
    return result;
  }, opts.lockWaitMs ?? 0);
}

/** How long to wait for sshd on machines the provider just created (env TRAY_SSH_WAIT_MS, default 180 s). */
function sshWaitMs(): number {
  const v = Number(process.env.TRAY_SSH_WAIT_MS);
  return Number.isFinite(v) && v >= 0 && process.env.TRAY_SSH_WAIT_MS ? v : 180_000;
}

/**
 * Connect (pinning the key on first contact). On a VM that is still booting, sshd refuses,
 * times out, or does not know our key yet (cloud-init): retry those for up to `waitMs`.
 * A changed host key is never retried.
 */
async function connectWithRetry(state: ClusterState, n: NodeState, waitMs: number, progress: Progress): Promise<SshConnection> {
  const deadline = Date.now() + waitMs;
  let delay = 500;
  for (;;) {
    try {
      return await connectNode(state, n, { pin: true, save: false });
    } catch (e) {
      const msg = isUserError(e) ? e.message : "";
      const transient = /connection refused|Cannot reach|closed the connection|refused to log in/.test(msg) && !/host key/i.test(msg);
      if (!transient || Date.now() + delay > deadline) throw e;
      progress.update(n.name, "waiting for sshd", msg.split(":")[0] ?? "");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
}

function indent(s: string): string {
  return s.split("\n").map((l) => "    " + l).join("\n");
}

/**
 * Run user commands one by one, showing the last line of output as progress. Everything they
 * print goes (in order, stdout and stderr together) to the host's log on this machine,
 * $TRAY_HOME/clusters/<name>/logs/<node>.log; a failure shows the end of it.
 */
async function runCommands(h: HostCtx, cmds: string[], label: string, progress: Progress, logFile: string): Promise<void> {
  fs.mkdirSync(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const log = (text: string) => { try { fs.appendFileSync(logFile, text); } catch { /* logging never fails a step */ } };
  for (const cmd of cmds) {
    progress.update(h.node.name, label, `$ ${cmd.length > 60 ? cmd.slice(0, 57) + "..." : cmd}`);
    log(`\n[${new Date().toISOString()}] ${label}: $ ${cmd}\n`);
    let lastLine = "";
    let tail = "";
    const r = await execScript(h.conn!, userScript(cmd), {
      label: cmd,
      maxOutput: 1,
      onData: (b) => {
        const text = b.toString("utf8");
        log(text);
        tail = (tail + text).slice(-64 * 1024);
        const l = text.trim().split("\n").pop()?.trim();
        if (l && l !== lastLine) {
          lastLine = l;
          progress.update(h.node.name, label, l.length > 70 ? l.slice(0, 67) + "..." : l);
        }
      },
    });
    log(`[exit ${r.signal ? `signal ${r.signal}` : r.code}]\n`);
    if (r.code !== 0) {
      const output = tail.trim().split("\n").slice(-20).join("\n");
      throw new UserError(
        `${h.node.ssh?.host ?? h.node.name}: ${label} command \`${cmd}\` failed with ${r.signal ? `signal ${r.signal}` : `exit code ${r.code}`}; its output (all of it in ${logFile}):\n${indent(output || "(no output)")}`,
      );
    }
  }
}

/** Copy file_mounts (remote -> local path) to the host; directories recursively. */
export async function uploadMounts(conn: SshConnection, home: string, mounts: Record<string, string>): Promise<void> {
  for (const [remoteRaw, local] of Object.entries(mounts)) {
    const remote = remoteRaw.startsWith("~/") ? `${home}/${remoteRaw.slice(2)}` : remoteRaw.startsWith("/") ? remoteRaw : `${home}/${remoteRaw}`;
    await uploadPath(conn, local, remote);
  }
}

/** Upload a local file or directory tree to `remote` (absolute). */
export async function uploadPath(conn: SshConnection, local: string, remote: string): Promise<number> {
  let st: fs.Stats;
  try { st = fs.statSync(local); } catch { throw new UserError(`${local} does not exist on this machine.`); }
  if (!st.isDirectory()) {
    await conn.mkdirp(path.posix.dirname(remote));
    await conn.upload(local, remote, st.mode & 0o777);
    return 1;
  }
  // one mkdir for the whole tree, then files in parallel (bounded)
  const dirs: string[] = [remote];
  const files: Array<{ l: string; r: string; mode: number }> = [];
  const walk = (l: string, r: string) => {
    for (const e of fs.readdirSync(l, { withFileTypes: true })) {
      const lp = path.join(l, e.name);
      const rp = `${r}/${e.name}`;
      if (e.isDirectory()) { dirs.push(rp); walk(lp, rp); }
      else if (e.isFile()) files.push({ l: lp, r: rp, mode: fs.statSync(lp).mode & 0o777 });
    }
  };
  walk(local, remote);
  await conn.run(sh(`mkdir -p ${dirs.map(shq).join(" ")}`), `creating ${remote}`);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(8, files.length) }, async () => {
    while (next < files.length) {
      const f = files[next++]!;
      await conn.upload(f.l, f.r, f.mode);
    }
  }));
  return files.length;
}

async function waitJoined(cluster: string, headConn: SshConnection, apiHost: string, port: number, token: string, hosts: HostCtx[], opts: UpRemoteOptions, progress: Progress): Promise<void> {
  const connector = opts.headConnector ?? defaultHeadConnector;
  const tunnel = tunnelOver(headConn, apiHost, port);
  const deadline = Date.now() + (opts.joinTimeoutMs ?? 60_000);
  let client: HeadView | undefined;
  let lastErr: unknown;
  const pending = new Set(hosts.map((h) => h.node.name));
  try {
    while (pending.size) {
      try {
        client ??= await connector({ url: tunnel.url, token, createConnection: tunnel.createConnection });
        const nodes = await client.nodes();
        for (const n of nodes) {
          if (n.name && pending.has(n.name) && n.alive !== false) {
            pending.delete(n.name);
            const h = hosts.find((x) => x.node.name === n.name)!;
            if (h.report.status !== "unchanged") h.report.status = "joined";
            progress.update(n.name, "joined", h.ready?.listen ?? "");
          }
        }
      } catch (e) {
        lastErr = e;
        try { await client?.close(); } catch { /* ignore */ }
        client = undefined;
      }
      if (!pending.size) break;
      if (Date.now() > deadline) {
        const names = [...pending].join(", ");
        throw new UserError(
          `The agents of ${names} started but did not join the head within ${Math.round((opts.joinTimeoutMs ?? 60_000) / 1000)} s${lastErr ? ` (${(lastErr as Error).message ?? lastErr})` : ""}; see ~/${REMOTE_ROOT}/nodes/${cluster}/agent.log on ${pending.size === 1 ? "that host" : "those hosts"}.`,
        );
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  } finally {
    try { await client?.close(); } catch { /* ignore */ }
    await tunnel.close();
  }
}

// ------------------------------------------------------------------ down

export interface DownRemoteOptions {
  name?: string;
  workersOnly?: boolean;
  lockWaitMs?: number;
  /** Keep the lowest-numbered workers of each type, this many (the YAML's min_workers). */
  keepMinWorkers?: Record<string, number>;
}

export interface DownRemoteResult {
  name: string;
  hosts: Array<{ name: string; host: string; status: "removed" | "failed"; agent?: string; error?: string }>;
  removed: RemovedResource[];
  elapsedMs: number;
}

/** The lowest-numbered workers of each type, as many as `keep` says (for --keep-min-workers). */
export function keptWorkers(nodes: NodeState[], keep: Record<string, number> | undefined): NodeState[] {
  if (!keep) return [];
  const num = (n: NodeState) => Number(/(\d+)$/.exec(n.name)?.[1] ?? Infinity);
  const out: NodeState[] = [];
  for (const [type, count] of Object.entries(keep)) {
    const ws = nodes.filter((n) => n.kind === "worker" && n.nodeType === type).sort((a, b) => num(a) - num(b));
    out.push(...ws.slice(0, count));
  }
  return out;
}

export async function downRemote(config: Pick<ClusterConfig, "cluster_name">, provider: Provider, opts: DownRemoteOptions, progress: Progress): Promise<DownRemoteResult> {
  const t0 = Date.now();
  const name = opts.name ?? config.cluster_name;
  return withClusterLock(name, "down", async () => {
    let state = readState(name);
    const creates = provider.capabilities.creates;
    if (creates) {
      // The cloud is the truth: instances tagged with this cluster are found even when the
      // local state is gone or stale, so `down` never leaves a machine behind.
      const found = await provider.queryInstances({ clusterName: name });
      if (!state) {
        if (!found.length) {
          progress.done();
          return { name, hosts: [], removed: await provider.cleanup(), elapsedMs: Date.now() - t0 };
        }
        progress.log(`no local state for "${name}": found ${found.length} instance(s) by tag`);
        state = { name, provider: provider.name, nodes: [], status: "up", updatedAt: "" };
      }
      for (const r of found) if (!state.nodes.some((n) => n.id === r.id || n.name === r.name)) state.nodes.push(toNodeState(r, undefined));
    }
    if (!state) {
      progress.done();
      throw new UserError(`No cluster named "${name}" is known on this machine (no ${statePath(name)}); nothing to take down.`);
    }
    const st = state;
    const keep = new Set(keptWorkers(st.nodes, opts.keepMinWorkers).map((n) => n.name));
    const targets = st.nodes.filter((n) => (!opts.workersOnly || n.kind === "worker") && !keep.has(n.name));
    const reports: DownRemoteResult["hosts"] = [];
    await Promise.all(
      targets.map(async (n) => {
        const host = n.ssh?.host ?? nodeAddress(n);
        try {
          progress.update(n.name, "stopping agent", host);
          const c = await connectNode(st, n, { pin: false, save: false });
          try {
            const out = await runScript(c, `${stopScript(`"$HOME/${REMOTE_ROOT}/nodes/${name}"`, name)}\n${removeScript(name)}`, "stopping the agent");
            const agent = out.trim().split("\n")[0] ?? "";
            progress.update(n.name, "removed", agent === "not-running" ? "(agent was not running)" : `(agent ${agent})`);
            reports.push({ name: n.name, host, status: "removed", agent });
          } finally {
            c.close();
          }
        } catch (e) {
          const msg = isUserError(e) ? e.message : String(e);
          progress.fail(n.name, msg);
          reports.push({ name: n.name, host, status: "failed", error: msg });
        }
      }),
    );
    // Machines the provider created are terminated even when their agent could not be
    // stopped over SSH (the VM goes, and the agent with it): nothing is left behind. Hosts of
    // a fixed list (ssh) stay in the state until they could be cleaned.
        const gone = new Set(reports.filter((r) => r.status === "removed" || creates).map((r) => r.name));
    const goneNodes = st.nodes.filter((n) => gone.has(n.name));
    const removed = goneNodes.length ? await provider.terminateInstances(goneNodes.map((n) => n.id)) : [];
    if (creates) {
      // the machines are gone; their addresses (and keys) will belong to others
      for (const n of goneNodes) if (n.ssh && st.hostKeys) delete st.hostKeys[hostKeyId(n.ssh.host, n.ssh.port)];
    }
    st.nodes = st.nodes.filter((n) => !gone.has(n.name));
    const onlyKept = st.nodes.every((n) => keep.has(n.name));
    if (!opts.workersOnly && st.nodes.length === 0) removed.push(...(await provider.cleanup()));
    st.status =
      st.nodes.length === 0 || (onlyKept && !opts.workersOnly) ? "down" : opts.workersOnly && st.nodes.every((n) => n.kind === "head" || keep.has(n.name)) ? st.status : "failed";
    if (st.status === "down") delete st.head;
    writeState(st);
    progress.done();
    const failed = reports.filter((r) => r.status === "failed");
    if (failed.length && !creates) {
      throw new UserError(
        `${failed.length} host(s) could not be cleaned (${failed.map((f) => f.host).join(", ")}): ${failed[0]!.error}`,
        { hint: "they stay in the cluster's state; run `tray down` again once they are reachable" },
      );
    }
    return { name, hosts: reports, removed, elapsedMs: Date.now() - t0 };
  }, opts.lockWaitMs ?? 0);
}
