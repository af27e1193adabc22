// Placement groups on a 3-node loopback cluster: every strategy, tasks and actors placed into
// bundles land on the bundle's node, removal gives the resources back, and a group that can
// never be placed says so (ready() rejects, tray status shows why).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster, waitFor } from "../helpers/cluster.js";

process.env.TRAY_HEARTBEAT_MS = "200";
process.env.TRAY_NODE_TIMEOUT_MS = "1500";
process.env.TRAY_INFEASIBLE_GRACE_MS = "3000";

const c = new TestCluster("mnpg", `cluster_name: mnpg
provider:
  type: local
available_node_types:
  head:
    resources: { CPU: 2 }
    node_config: {}
  worker:
    resources: { CPU: 2 }
    node_config: {}
    min_workers: 2
    max_workers: 2
head_node_type: head
`);
before(() => c.up());
after(() => c.down());

const last = (out: string) => JSON.parse(out.trim().split("\n").pop()!);

const PRELUDE = `
  import { remote, get, placementGroup, removePlacementGroup, availableResources, getRuntimeContext } from "tray";
  const where = remote(async () => { await new Promise((r) => setTimeout(r, 20)); return getRuntimeContext().nodeId; });
  const Who = remote(class Who { where() { return getRuntimeContext().nodeId; } });
  const inBundle = (pg: any, i: number) => ({ schedulingStrategy: { placementGroup: pg, bundleIndex: i } });
  async function bundleNodes(pg: any, n: number) {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(...new Set(await get([0, 1, 2].map(() => where.options(inBundle(pg, i)).remote()))));
    return out;
  }
`;

test("STRICT_SPREAD puts each bundle on its own node; tasks and an actor placed in a bundle run on its node", async () => {
  const r = await c.submit(`${PRELUDE}
    export default async function main() {
      const pg = placementGroup([{ CPU: 1 }, { CPU: 1 }, { CPU: 1 }], { strategy: "STRICT_SPREAD", name: "ss" });
      await pg.ready();
      const nodes = await bundleNodes(pg, 3);
      const a = Who.options(inBundle(pg, 1)).remote();
      const actorNode = await get(a.where.remote());
      const avail = await availableResources();
      const groupKeys = Object.keys(avail).filter((k) => k.includes("_group_" + pg.id)).length;
      console.log(JSON.stringify({ nodes, actorNode, cpu: avail.CPU, groupKeys }));
    }`);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const out = last(r.stdout);
  assert.equal(out.nodes.length, 3, "each bundle's tasks ran on exactly one node");
  assert.equal(new Set(out.nodes).size, 3, "three bundles, three nodes");
  assert.deepEqual([...out.nodes].sort(), (c.state().nodes as any[]).map((n) => n.id).sort());
  assert.equal(out.actorNode, out.nodes[1]);
  assert.equal(out.cpu, 3, "3 of 6 CPUs are reserved by the bundles");
  assert.ok(out.groupKeys > 0);
});

test("an actor and a task placed into a bundle before ready() wait for it and run on the bundle's node", async () => {
  const r = await c.submit(`${PRELUDE}
    export default async function main() {
      const pg = placementGroup([{ CPU: 1 }, { CPU: 1 }, { CPU: 1 }], { strategy: "STRICT_SPREAD" });
      const a = Who.options(inBundle(pg, 2)).remote();
      const t = where.options(inBundle(pg, 2)).remote();
      const [actorNode, taskNode] = [await get(a.where.remote()), await get(t)];
      await pg.ready();
      const again = await get(where.options(inBundle(pg, 2)).remote());
      console.log(JSON.stringify({ actorNode, taskNode, again }));
    }`);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const out = last(r.stdout);
  assert.equal(out.actorNode, out.again);
  assert.equal(out.taskNode, out.again);
});

test("STRICT_PACK and PACK keep bundles on one node; SPREAD spreads them", async () => {
  const r = await c.submit(`${PRELUDE}
    export default async function main() {
      const sp = placementGroup([{ CPU: 1 }, { CPU: 1 }], { strategy: "STRICT_PACK" });
      await sp.ready();
      const strictPack = await bundleNodes(sp, 2);
      await removePlacementGroup(sp);
      const p = placementGroup([{ CPU: 1 }, { CPU: 1 }], { strategy: "PACK" });
      await p.ready();
      const pack = await bundleNodes(p, 2);
      await removePlacementGroup(p);
      const s = placementGroup([{ CPU: 1 }, { CPU: 1 }, { CPU: 1 }], { strategy: "SPREAD" });
      await s.ready();
      const spread = await bundleNodes(s, 3);
      console.log(JSON.stringify({ strictPack, pack, spread }));
    }`);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const out = last(r.stdout);
  assert.equal(out.strictPack.length, 2);
  assert.equal(new Set(out.strictPack).size, 1);
  assert.equal(new Set(out.pack).size, 1);
  assert.equal(new Set(out.spread).size, 3);
});

test("removePlacementGroup gives the bundles' resources back", async () => {
  const r = await c.submit(`${PRELUDE}
    export default async function main() {
      const pg = placementGroup([{ CPU: 2 }, { CPU: 2 }], { strategy: "SPREAD" });
      await pg.ready();
      const during = (await availableResources()).CPU;
      await removePlacementGroup(pg);
      let after = -1, keys = -1;
      for (let i = 0; i < 100; i++) {
        const a = await availableResources();
        after = a.CPU; keys = Object.keys(a).filter((k) => k.includes("_group_" + pg.id)).length;
        if (after === 6 && keys === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      // the freed CPUs run ordinary tasks again: 6 at once across the cluster
      const t0 = Date.now();
      const nodes = await get(Array.from({ length: 6 }, () => where.options({ schedulingStrategy: "SPREAD" }).remote()));
      console.log(JSON.stringify({ during, after, keys, nodes: new Set(nodes).size }));
    }`);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.deepEqual(last(r.stdout), { during: 2, after: 6, keys: 0, nodes: 3 });
});

test("a STRICT_SPREAD group that can never be placed: ready() rejects with the reason, tray status shows it", async () => {
  const child = c.spawnCli(["submit", writeJob(`${PRELUDE}
    export default async function main() {
      const pg = placementGroup([{ CPU: 1 }, { CPU: 1 }, { CPU: 1 }, { CPU: 1 }], { strategy: "STRICT_SPREAD", name: "toomany" });
      console.log("CREATED");
      try { await pg.ready(); console.log(JSON.stringify({ name: "none" })); }
      catch (e: any) { console.log(JSON.stringify({ name: e.name, msg: e.message })); }
    }`)]);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const code = new Promise<number>((res) => child.on("exit", (x) => res(x ?? 1)));
  const shown = await waitFor(async () => {
    const s = await c.cli(["status"]);
    return /toomany.*STRICT_SPREAD.*PENDING.*infeasible/.test(s.stdout) ? s.stdout : undefined;
  }, 20_000, "the pending group in tray status");
  assert.match(shown, /4 different nodes/);
  assert.equal(await code, 0);
  const res = last(out);
  assert.equal(res.name, "InfeasibleTaskError");
  assert.match(res.msg, /STRICT_SPREAD needs 4 different nodes, one per bundle, and only 3/);
});

import fs from "node:fs";
import path from "node:path";
function writeJob(src: string): string {
  const f = path.join(c.home, `job-${Math.random().toString(36).slice(2)}.ts`);
  fs.writeFileSync(f, src);
  return f;
}
