// Where a task or actor should run, from this node's view of the cluster (pure: unit-tested).
// Bottom-up as in the Ray paper: local first; what does not fit here now goes to a node
// that has room in the broadcast view; SPREAD rotates over feasible nodes; node affinity
// pins (hard) or prefers (soft) one node.
import { feasible, fits, type Resources } from "./resources.js";
import type { NodeView } from "../../src/protocol/cluster.js";

export type Strategy = "DEFAULT" | "SPREAD" | { nodeId: string; soft?: boolean } | { placementGroup: { id: string }; bundleIndex?: number } | undefined;

export type Placement = { node: string } | { infeasible: string } | { error: string };

export function place(self: NodeView, nodes: NodeView[], demand: Resources, strategy: Strategy, spreadCounter: number): Placement {
  const alive = nodes.filter((n) => n.alive);
  if (!alive.some((n) => n.nodeId === self.nodeId)) alive.push(self);
  const canEver = alive.filter((n) => feasible(n.total, demand));
  if (strategy && typeof strategy === "object" && "nodeId" in strategy) {
    const target = alive.find((n) => n.nodeId === strategy.nodeId || n.nodeId.startsWith(strategy.nodeId));
    if (target && feasible(target.total, demand)) return { node: target.nodeId };
    if (!strategy.soft) {
      return { error: target ? `node ${strategy.nodeId} can never provide the demanded resources` : `node ${strategy.nodeId} is not alive in this cluster (hard node affinity)` };
    }
  }
  if (!canEver.length) return { infeasible: "no node of the cluster can ever provide it" };
  if (strategy === "SPREAD") {
    // Rotate over every node that can run it, so consecutive tasks land on different nodes.
    // (Rotating only over nodes with room *now* sent a burst almost entirely to this node:
    // the others look full in the view after one task each until their next heartbeat.)
    const pool = canEver.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
    return { node: pool[spreadCounter % pool.length]!.nodeId };
  }
  // Local first while this node has room and nothing queued ahead (its view is exact).
  if (feasible(self.total, demand) && fits(self.available, demand) && self.queued === 0) return { node: self.nodeId };
  const withRoom = canEver.filter((n) => n.nodeId !== self.nodeId && fits(n.available, demand));
  if (withRoom.length) {
    withRoom.sort((a, b) => a.queued - b.queued || (b.available.CPU ?? 0) - (a.available.CPU ?? 0));
    return { node: withRoom[0]!.nodeId };
  }
  // Everything is busy: queue where the queue is shortest for the node's size (this node's
  // figures are exact, the others' are the last view plus what was sent there since), this
  // node first on a tie. Queueing everything here left the other nodes idle during a burst.
  const load = (n: NodeView) => n.queued / Math.max(1, n.total.CPU ?? 1);
  let best: NodeView | undefined = feasible(self.total, demand) ? self : undefined;
  for (const n of canEver) if (!best || load(n) < load(best)) best = n;
  return { node: best!.nodeId };
}
