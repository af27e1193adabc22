// `tray rsync-up SRC DST` / `tray rsync-down SRC DST`: copy files between this machine and
// the cluster's nodes over SFTP (directories recursively, modes kept). Up goes to the head,
// or every node with allNodes; down comes from the head (or one named node).
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";
import type { SshConnection } from "../ssh/client.js";
import { connectNode, sshClusterState } from "../ssh/cluster.js";
import { uploadPath } from "./remote.js";
import { clusterState } from "./ips.js";

export interface RsyncOptions {
  cluster?: string;
  /** rsync-up: copy to every node, not only the head. */
  allNodes?: boolean;
  /** rsync-down: the node to copy from (name or address), default the head. */
  node?: string;
}

export interface RsyncResult {
  nodes: string[];
  files: number;
}

async function remoteAbs(conn: SshConnection, p: string): Promise<string> {
  if (p.startsWith("/")) return p.replace(/\/+$/, "") || "/";
  const home = await conn.home();
  if (p === "~" || p === "" || p === ".") return home;
  return `${home}/${p.replace(/^~\//, "").replace(/\/+$/, "")}`;
}

export async function rsyncUp(src: string, dst: string, o: RsyncOptions = {}): Promise<RsyncResult> {
  const local = path.resolve(src);
  if (!fs.existsSync(local)) throw new UserError(`${src} does not exist on this machine.`);
  const cs = clusterState(o.cluster);
  if (cs.provider === "local") {
    const files = (await import("./local-node.js")).copyLocal(src, dst, "up");
    return { nodes: cs.nodes.filter((n) => o.allNodes || n.kind === "head").map((n) => n.name), files };
  }
  const state = sshClusterState(cs.name);
  const nodes = o.allNodes ? state.nodes : state.nodes.filter((n) => n.kind === "head");
  let files = 0;
  await Promise.all(nodes.map(async (n) => {
    const conn = await connectNode(state, n);
    try {
      let target = await remoteAbs(conn, dst);
      // like cp/rsync: copying a file into an existing directory keeps its name
      const st = await conn.stat(target);
      if (st?.isDir && !fs.statSync(local).isDirectory()) target = `${target}/${path.basename(local)}`;
      files = await uploadPath(conn, local, target);
    } finally {
      conn.close();
    }
  }));
  return { nodes: nodes.map((n) => n.name), files };
}

export async function rsyncDown(src: string, dst: string, o: RsyncOptions = {}): Promise<RsyncResult> {
  const cs = clusterState(o.cluster);
  if (cs.provider === "local") {
    const files = (await import("./local-node.js")).copyLocal(src, dst, "down");
    return { nodes: cs.nodes.filter((n) => n.kind === "head").map((n) => n.name), files };
  }
  const state = sshClusterState(cs.name);
  const node = o.node
    ? state.nodes.find((n) => n.name === o.node || n.ssh?.host === o.node || n.privateIp === o.node || n.publicIp === o.node)
    : state.nodes.find((n) => n.kind === "head");
  if (!node) throw new UserError(o.node ? `Cluster "${state.name}" has no node named ${o.node}.` : `Cluster "${state.name}" has no head node.`);
  const conn = await connectNode(state, node);
  try {
    const remote = await remoteAbs(conn, src);
    const st = await conn.stat(remote);
    if (!st) throw new UserError(`${remote} does not exist on ${node.name} (${node.ssh?.host}).`);
    let local = path.resolve(dst);
    if (!st.isDir) {
      if (fs.existsSync(local) && fs.statSync(local).isDirectory()) local = path.join(local, path.posix.basename(remote));
      fs.mkdirSync(path.dirname(local), { recursive: true });
      await conn.download(remote, local);
      fs.chmodSync(local, st.mode & 0o777);
      return { nodes: [node.name], files: 1 };
    }
    let files = 0;
    const walk = async (r: string, l: string): Promise<void> => {
      fs.mkdirSync(l, { recursive: true });
      for (const e of await conn.readdir(r)) {
        if (e.name === "." || e.name === "..") continue;
        if (e.isDir) await walk(`${r}/${e.name}`, path.join(l, e.name));
        else {
          await conn.download(`${r}/${e.name}`, path.join(l, e.name));
          fs.chmodSync(path.join(l, e.name), e.mode & 0o777);
          files++;
        }
      }
    };
    await walk(remote, local);
    return { nodes: [node.name], files };
  } finally {
    conn.close();
  }
}
