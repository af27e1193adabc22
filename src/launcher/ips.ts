// `tray get-head-ip` / `tray get-worker-ips`: addresses from the cluster's state (no network).
import { UserError } from "../errors.js";
import { lastCluster, readState, type ClusterState, type NodeState } from "./state.js";

export function clusterState(name?: string): ClusterState {
  const n = name ?? process.env.TRAY_CLUSTER ?? lastCluster();
  if (!n) throw new UserError("No cluster given and none brought up on this machine yet: run `tray up CONFIG` first, or pass --cluster NAME.");
  const s = readState(n);
  if (!s) throw new UserError(`No cluster named "${n}" is known on this machine: run \`tray up\` first (see \`tray clusters\`).`);
  return s;
}

/** The address users reach a node at: its public address when it has one, else its private one. */
export function nodeIp(n: NodeState, internal = false): string {
  return (internal ? n.privateIp ?? n.publicIp : n.publicIp ?? n.privateIp) ?? n.ssh?.host ?? n.id;
}

export function getHeadIp(o: { cluster?: string; internal?: boolean } = {}): string {
  const s = clusterState(o.cluster);
  const head = s.nodes.find((n) => n.kind === "head");
  if (!head) throw new UserError(`Cluster "${s.name}" has no head node (it is ${s.status}); run \`tray up\`.`);
  return nodeIp(head, o.internal);
}

export function getWorkerIps(o: { cluster?: string; internal?: boolean } = {}): string[] {
  const s = clusterState(o.cluster);
  return s.nodes.filter((n) => n.kind === "worker").map((n) => nodeIp(n, o.internal));
}
