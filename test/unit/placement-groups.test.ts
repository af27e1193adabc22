// Bundle placement per strategy, demand rewriting and node-side reservations (pure parts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { BundleReservations, placeBundles, rewriteDemand } from "../../agent/node/placement-groups.js";

const nodes = [
  { nodeId: "a", resources: { CPU: 4 } },
  { nodeId: "b", resources: { CPU: 2 } },
  { nodeId: "c", resources: { CPU: 1 } },
];
const two = [{ CPU: 1 }, { CPU: 1 }];

test("STRICT_PACK and PACK put every bundle on one node when one fits them all", () => {
  assert.deepEqual(placeBundles(nodes, two, "STRICT_PACK"), { nodes: ["a", "a"] });
  assert.deepEqual(placeBundles(nodes, two, "PACK"), { nodes: ["a", "a"] });
});

test("PACK falls back to few nodes; STRICT_PACK refuses", () => {
  const big = [{ CPU: 3 }, { CPU: 2 }];
  assert.deepEqual(placeBundles(nodes, big, "PACK"), { nodes: ["a", "b"] });
  const r = placeBundles(nodes, big, "STRICT_PACK");
  assert.ok("error" in r && /STRICT_PACK needs one node with \{CPU: 5\}/.test(r.error));
});

test("SPREAD prefers distinct nodes, reuses when it must; STRICT_SPREAD refuses", () => {
  assert.deepEqual(placeBundles(nodes, [{ CPU: 1 }, { CPU: 1 }, { CPU: 1 }], "SPREAD"), { nodes: ["a", "b", "c"] });
  assert.deepEqual(placeBundles(nodes, [{ CPU: 2 }, { CPU: 2 }, { CPU: 2 }], "SPREAD"), { nodes: ["a", "b", "a"] });
  const r = placeBundles(nodes, [{ CPU: 2 }, { CPU: 2 }, { CPU: 2 }], "STRICT_SPREAD");
  assert.ok("error" in r && /needs 3 different nodes.*only 2/.test(r.error), JSON.stringify(r));
  const s = placeBundles(nodes, [{ GPU: 1 }], "SPREAD");
  assert.ok("error" in s && /bundle 0 \{GPU: 1\} does not fit/.test(s.error));
});

test("a task's demand is rewritten to its bundle's resources, once", () => {
  const d = { CPU: 1, GPU: 0 };
  rewriteDemand(d, "pg1", 2);
  assert.deepEqual(d, { CPU_group_pg1_2: 1, bundle_group_pg1_2: 0.001 });
  rewriteDemand(d, "pg1", 2);
  assert.deepEqual(d, { CPU_group_pg1_2: 1, bundle_group_pg1_2: 0.001 });
  const any: Record<string, number> = {};
  rewriteDemand(any, "pg1", -1);
  assert.deepEqual(any, { bundle_group_pg1: 0.001 });
});

test("reservations: prepare takes resources, commit exposes group resources, release restores", () => {
  const total: Record<string, number> = { CPU: 2 };
  const avail: Record<string, number> = { CPU: 2 };
  const r = new BundleReservations(total, avail);
  assert.equal(r.prepare("g", 0, { CPU: 1 }), true);
  assert.equal(r.prepare("g", 1, { CPU: 2 }), false, "does not fit what is left");
  assert.equal(avail.CPU, 1);
  assert.equal(r.commit("g", 0), true);
  assert.equal(total.CPU_group_g_0, 1);
  assert.equal(avail.CPU_group_g, 1);
  r.releaseGroup("g");
  assert.deepEqual(total, { CPU: 2 });
  assert.deepEqual(avail, { CPU: 2 });
});
