// Where a task goes from one node's view (agent/node/placement.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { place } from "../../agent/node/placement.js";
import type { NodeView } from "../../src/protocol/cluster.js";

const node = (id: string, cpu: number, free: number, queued = 0, extra: Record<string, number> = {}): NodeView => ({
  nodeId: id, name: id, nodeType: "t", ip: "127.0.0.1", port: 1, isHead: id === "a", alive: true,
  total: { CPU: cpu, ...extra }, available: { CPU: free, ...extra }, queued, lastSeen: 0,
});

test("SPREAD rotates over every node that can run it, busy or not", () => {
  const self = node("a", 1, 1);
  const all = [self, node("b", 1, 0, 5), node("c", 1, 0, 5)];
  const picks = [0, 1, 2, 3, 4, 5].map((i) => (place(self, all, { CPU: 1 }, "SPREAD", i) as { node: string }).node);
  assert.deepEqual(picks, ["a", "b", "c", "a", "b", "c"]);
});

test("DEFAULT: local while there is room, then a node with room, then the shortest queue per CPU", () => {
  const all = (selfFree: number, selfQ: number) => [node("a", 2, selfFree, selfQ), node("b", 2, 0, 4), node("c", 4, 0, 4)];
  assert.deepEqual(place(node("a", 2, 1, 0), all(1, 0), { CPU: 1 }, "DEFAULT", 0), { node: "a" });
  assert.deepEqual(place(node("a", 2, 0, 0), [node("a", 2, 0), node("b", 2, 1), node("c", 4, 0)], { CPU: 1 }, "DEFAULT", 0), { node: "b" });
  // all busy: a has 10 queued on 2 CPUs, b 4 on 2, c 4 on 4 -> c
  assert.deepEqual(place(node("a", 2, 0, 10), all(0, 10), { CPU: 1 }, "DEFAULT", 0), { node: "c" });
  // a tie keeps it here
  assert.deepEqual(place(node("a", 4, 0, 4), [node("a", 4, 0, 4), node("c", 4, 0, 4)], { CPU: 1 }, "DEFAULT", 0), { node: "a" });
});

test("node affinity: hard fails on an unknown node, soft falls back; a resource only one node has goes there", () => {
  const self = node("a", 1, 1);
  const all = [self, node("b", 1, 1, 0, { special: 1 })];
  assert.ok("error" in place(self, all, { CPU: 1 }, { nodeId: "zzz" }, 0));
  assert.deepEqual(place(self, all, { CPU: 1 }, { nodeId: "zzz", soft: true }, 0), { node: "a" });
  assert.deepEqual(place(self, all, { special: 1 }, "DEFAULT", 0), { node: "b" });
  assert.ok("infeasible" in place(self, all, { nope: 1 }, "DEFAULT", 0));
});
