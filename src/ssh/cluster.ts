// Connecting to a cluster's nodes with what `tray up` recorded: the login (user, key path,
// known_hosts file) in $TRAY_HOME/clusters/<name>/ssh.json, and the host keys pinned in
// state.json. Used by up/down (remote.ts), attach, exec, rsync and the head tunnel.
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";
import { clusterDir, readState, statePath, writeState, type ClusterState, type NodeState } from "../launcher/state.js";
import { SshConnection } from "./client.js";
import { hostKeyId } from "./hostkeys.js";

export interface ClusterSshAuth {
  user: string;
  /** Absolute path of auth.ssh_private_key on this machine (never copied anywhere). */
  privateKeyPath?: string;
  /** provider.known_hosts_file, if any. */
  knownHostsFile?: string;
}

export function sshAuthPath(name: string): string {
  return path.join(clusterDir(name), "ssh.json");
}

export function saveSshAuth(name: string, auth: ClusterSshAuth): void {
  fs.mkdirSync(clusterDir(name), { recursive: true, mode: 0o700 });
  fs.writeFileSync(sshAuthPath(name), JSON.stringify(auth, null, 2) + "\n", { mode: 0o600 });
}

export function loadSshAuth(name: string): ClusterSshAuth | undefined {
  try {
    return JSON.parse(fs.readFileSync(sshAuthPath(name), "utf8")) as ClusterSshAuth;
  } catch {
    return undefined;
  }
}

/** The state of a cluster that has SSH nodes, or a UserError saying why not. */
export function sshClusterState(name: string | undefined): ClusterState {
  if (!name) throw new UserError("No cluster given and no `tray up` has run on this machine; pass --cluster NAME.");
  const state = readState(name);
  if (!state) throw new UserError(`No cluster named "${name}" is known on this machine (no ${statePath(name)}); run \`tray up\` first.`);
  if (!state.nodes.some((n) => n.ssh)) {
    throw new UserError(`Cluster "${name}" runs on this machine (provider ${state.provider}); its nodes are not reached over SSH.`);
  }
  return state;
}

export interface NodeConnectOptions {
  /** Pin new keys into this state object (and save it) — true during `up`. */
  pin?: boolean;
  timeoutMs?: number;
  /** Save the state after pinning (default true; `up` saves itself). */
  save?: boolean;
}

/**
 * Connect to one node of `state` with the cluster's login, checking the host key against the
 * pin in state.hostKeys (and known_hosts). A first contact pins the key when opts.pin, else
 * refuses (a node `up` never reached has no business being trusted by `exec`).
 */
export async function connectNode(state: ClusterState, node: Pick<NodeState, "ssh" | "name">, opts: NodeConnectOptions = {}): Promise<SshConnection> {
  if (!node.ssh) throw new UserError(`Node ${node.name} of cluster "${state.name}" has no SSH address.`);
  const auth = loadSshAuth(state.name);
  const { host, port, user } = node.ssh;
  const id = hostKeyId(host, port);
  const pinned = state.hostKeys?.[id];
  const conn = await SshConnection.connect({
    host,
    port,
    user: user || auth?.user || "root",
    ...(auth?.privateKeyPath ? { privateKeyPath: auth.privateKeyPath } : {}),
    ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
    hostKeys: {
      ...(pinned ? { pinned } : {}),
      ...(auth?.knownHostsFile ? { knownHostsFile: auth.knownHostsFile } : {}),
      stateFile: statePath(state.name),
      strict: !opts.pin && !pinned && !auth?.knownHostsFile,
    },
  });
  if (!pinned && conn.hostKey) {
    state.hostKeys = { ...(state.hostKeys ?? {}), [id]: conn.hostKey };
    if (opts.save !== false) writeState(state);
  }
  return conn;
}

/** The head node of the cluster. */
export function headNode(state: ClusterState): NodeState {
  const head = state.nodes.find((n) => n.kind === "head");
  if (!head) throw new UserError(`Cluster "${state.name}" has no head node in ${statePath(state.name)}; run \`tray up\` again.`);
  return head;
}
