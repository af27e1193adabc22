// Losing a node on loopback clusters: kill -9 a node agent while a job runs and check what
// the job sees. Tasks are retried elsewhere, a lost task result is rebuilt from lineage, a
// put object whose only copy died is reported lost naming the node, an actor is restarted
// elsewhere per maxRestarts (and dies with ActorDiedError with none).
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { localClusterYaml, TestCluster, waitFor } from "../helpers/cluster.js";

process.env.TRAY_HEARTBEAT_MS = "200";
process.env.TRAY_NODE_TIMEOUT_MS = "1500";

const yaml = (name: string) => localClusterYaml(name, { workers: { worker: { resources: { CPU: 1, special: 1 }, count: 2 } } });

let current: TestCluster | undefined;
afterEach(async () => {
  await current?.down();
  current = undefined;
});

async function cluster(name: string) {
  const c = (current = new TestCluster(name, yaml(name)));
  await c.up();
  const nodes = c.state().nodes as Array<{ id: string; name: string; kind: string; pid: number }>;
  const workers = nodes.filter((n) => n.kind === "worker");
  return { c, head: nodes.find((n) => n.kind === "head")!, a: workers[0]!, b: workers[1]! };
}


async function killAndWaitDead(c: TestCluster, node: { id: string; pid: number }) {
  process.kill(node.pid, "SIGKILL");
  await waitFor(async () => {
    const s = JSON.parse((await c.cli(["status", "--json"])).stdout.trim().split("\n")[0]!);
    return s.nodes.find((n: any) => n.nodeId === node.id)?.alive === false || undefined;
  }, 20_000, "the killed node to be reported dead");
}

/** A job waits for this file before it goes on (so the test can kill a node at a known point). */
const GO = `async function go(file: string) { while (!fs.existsSync(file)) await new Promise((r) => setTimeout(r, 20)); }`;

test("kill -9 a node agent during a job of many tasks: the job's result is still correct", async () => {
  const { c, a } = await cluster("mnkill");
  const j = c.startJob(`
    import { remote, get, getRuntimeContext } from "tray";
    const sq = remote(async (i: number) => { await new Promise((r) => setTimeout(r, 60)); return { v: i * i, node: getRuntimeContext().nodeId }; });
    export default async function main() {
      const refs = Array.from({ length: 90 }, (_, i) => sq.options({ schedulingStrategy: "SPREAD" }).remote(i));
      console.log("SUBMITTED");
      const res = await get(refs);
      console.log(JSON.stringify({ ok: res.every((r, i) => r.v === i * i), n: res.length, nodes: [...new Set(res.map((r) => r.node))] }));
    }`);
  await j.saw(/SUBMITTED/);
  await new Promise((r) => setTimeout(r, 400));
  process.kill(a.pid, "SIGKILL");
  const res = await j.result();
  assert.equal(res.ok, true);
  assert.equal(res.n, 90);
});

test("kill the node holding a task's large result: get rebuilds it from lineage on another node", async () => {
  const { c, a } = await cluster("mnlineage");
  const goFile = path.join(c.home, "go");
  const j = c.startJob(`
    import { remote, get, getRuntimeContext } from "tray";
    import fs from "node:fs";
    ${GO}
    const big = remote((n: number) => { const d = new Float64Array(n); for (let i = 0; i < n; i++) d[i] = i * 0.5; return { node: getRuntimeContext().nodeId, d }; });
    export default async function main(args: string[]) {
      const [nodeA, goFile] = args;
      const ref = big.options({ schedulingStrategy: { nodeId: nodeA, soft: true } }).remote(1_000_000);
      console.log("SUBMITTED");
      await go(goFile);
      const v = await get(ref);
      let ok = v.d.length === 1_000_000;
      for (let i = 0; i < v.d.length; i += 999) ok &&= v.d[i] === i * 0.5;
      console.log(JSON.stringify({ ok, node: v.node }));
    }`, [a.id, goFile]);
  await j.saw(/SUBMITTED/);
  // the result is in node A's store, and only there
  const dir = `/dev/shm/tray-mnlineage-${a.id.slice(0, 8)}`;
  await waitFor(() => (fs.existsSync(dir) && fs.readdirSync(dir).some((f) => !f.startsWith(".") && fs.statSync(path.join(dir, f)).size >= 8_000_000)) || undefined, 30_000, "the result in node A's store");
  await killAndWaitDead(c, a);
  fs.writeFileSync(goFile, "");
  const res = await j.result();
  assert.equal(res.ok, true);
  assert.notEqual(res.node, a.id);
});

test("a put object whose only copy was on a dead node: get rejects with ObjectLostError naming the node", async () => {
  const { c, a } = await cluster("mnlost");
  const goFile = path.join(c.home, "go");
  const j = c.startJob(`
    import { remote, get, put } from "tray";
    import fs from "node:fs";
    ${GO}
    const maker = remote(() => [put(new Uint8Array(2_000_000).fill(4))]);
    export default async function main(args: string[]) {
      const [nodeA, goFile] = args;
      const [inner] = await get(maker.options({ schedulingStrategy: { nodeId: nodeA } }).remote());
      console.log("GOT");
      await go(goFile);
      try { const v = await get(inner, { timeoutMs: 20000 }); console.log(JSON.stringify({ name: "none", len: v.length })); }
      catch (e: any) { console.log(JSON.stringify({ name: e.name, msg: e.message })); }
    }`, [a.id, goFile]);
  await j.saw(/GOT/);
  await killAndWaitDead(c, a);
  fs.writeFileSync(goFile, "");
  const res = await j.result();
  assert.equal(res.name, "ObjectLostError", JSON.stringify(res));
  assert.match(res.msg, new RegExp(a.name));
});

test("an actor on a node that dies is restarted elsewhere per maxRestarts; with maxRestarts 0 its calls fail with ActorDiedError", async () => {
  const { c, a, b } = await cluster("mnactor");
  const goFile = path.join(c.home, "go");
  const j = c.startJob(`
    import { remote, get, getRuntimeContext } from "tray";
    import fs from "node:fs";
    ${GO}
    const Acc = remote(class Acc { n = 0; add(x: number) { return (this.n += x); } where() { return getRuntimeContext().nodeId; } });
    export default async function main(args: string[]) {
      const [nodeA, goFile] = args;
      const keep = Acc.options({ maxRestarts: 1, resources: { special: 1 }, schedulingStrategy: { nodeId: nodeA, soft: true } }).remote();
      const once = Acc.options({ maxRestarts: 0, schedulingStrategy: { nodeId: nodeA, soft: true } }).remote();
      await get([keep.add.remote(5), once.add.remote(7)]);
      const before = [await get(keep.where.remote()), await get(once.where.remote())];
      console.log("PLACED " + JSON.stringify(before));
      await go(goFile);
      let after = "", n = -1, tries = 0;
      for (;;) {
        try { after = await get(keep.where.remote()); n = await get(keep.add.remote(1)); break; }
        catch (e: any) { if (e.name !== "ActorDiedError" || ++tries > 100) throw e; await new Promise((r) => setTimeout(r, 100)); }
      }
      let onceErr = "";
      try { await get(once.add.remote(1)); } catch (e: any) { onceErr = e.name + ": " + e.message; }
      console.log(JSON.stringify({ before, after, n, onceErr }));
    }`, [a.id, goFile]);
  await j.saw(/PLACED/);
  await killAndWaitDead(c, a);
  fs.writeFileSync(goFile, "");
  const res = await j.result();
  assert.deepEqual(res.before, [a.id, a.id]);
  assert.equal(res.after, b.id);
  assert.equal(res.n, 1, "a restarted actor starts from its constructor");
  assert.match(res.onceErr, /^ActorDiedError: /);
  assert.match(res.onceErr, new RegExp(a.name));
});

test("a placement group with a bundle on a node that dies is placed again on a live node", async () => {
  const { c, a, b } = await cluster("mnpgdie");
  const goFile = path.join(c.home, "go");
  const j = c.startJob(`
    import { remote, get, placementGroup, getRuntimeContext } from "tray";
    import fs from "node:fs";
    ${GO}
    const where = remote(() => getRuntimeContext().nodeId);
    export default async function main(args: string[]) {
      const [goFile] = args;
      const pg = placementGroup([{ CPU: 1, special: 1 }], { strategy: "PACK", name: "survivor" });
      await pg.ready();
      const opts = { schedulingStrategy: { placementGroup: pg, bundleIndex: 0 } };
      const before = await get(where.options(opts).remote());
      console.log("BEFORE " + before);
      await go(goFile);
      await pg.ready();
      const after = await get(where.options(opts).remote());
      console.log(JSON.stringify({ before, after }));
    }`, [goFile]);
  await j.saw(/BEFORE \w+/);
  const holder = /BEFORE (\w+)/.exec(j.out())![1] === a.id ? a : b;
  const other = holder === a ? b : a;
  await killAndWaitDead(c, holder);
  fs.writeFileSync(goFile, "");
  const res = await j.result();
  assert.equal(res.before, holder.id);
  assert.equal(res.after, other.id);
});
