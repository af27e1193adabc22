// SPREAD tasks through leases (owner-side submission, as in Ray): the driver on the head leases
// workers on every node and sends tasks to them itself, so the head agent takes part per lease,
// not per task (its counters show it); large results stay on the node that made them, are
// fetched when read and freed with their refs; a node killed mid-lease has its tasks retried
// (or failed with the usual error when no retries are left); /direct refuses a caller without
// the cluster token or the lease's secret.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { localClusterYaml, TestCluster, waitFor } from "../helpers/cluster.js";

process.env.TRAY_HEARTBEAT_MS = "200";
process.env.TRAY_NODE_TIMEOUT_MS = "1500";

let current: TestCluster | undefined;
afterEach(async () => {
  await current?.down();
  current = undefined;
});

async function cluster(name: string) {
  const c = (current = new TestCluster(name, localClusterYaml(name, { workers: { worker: { resources: { CPU: 1 }, count: 2 } } })));
  await c.up();
  const nodes = c.state().nodes as Array<{ id: string; name: string; kind: string; pid: number }>;
  const workers = nodes.filter((n) => n.kind === "worker");
  return { c, head: nodes.find((n) => n.kind === "head")!, a: workers[0]!, b: workers[1]! };
}

const last = (out: string) => JSON.parse(out.trim().split("\n").pop()!);

/** Store files of a node of 1 MB or more (parked free files excluded). */
function bigFiles(cluster: string, nodeId: string): string[] {
  const dir = `/dev/shm/tray-${cluster}-${nodeId.slice(0, 8)}`;
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => !f.startsWith(".") && fs.statSync(path.join(dir, f)).size >= 1_000_000);
}

test("SPREAD tasks run on every node through leases: the head agent sees leases, not tasks; large results are fetched and freed", async () => {
  const { c, head, a, b } = await cluster("mnlease");
  const r = await c.submit(`
    import { remote, get, nodes, getRuntimeContext } from "tray";
    const where = remote((i: number) => ({ i, node: getRuntimeContext().nodeId }));
    const big = remote((i: number) => ({ node: getRuntimeContext().nodeId, d: new Uint8Array(2_000_000).fill(i) }));
    const stats = async () => ((await nodes()).find((n: any) => n.isHead) as any).taskStats;
    export default async function main() {
      const s0 = await stats();
      const n = 3000;
      const res = await get(Array.from({ length: n }, (_, i) => where.options({ schedulingStrategy: "SPREAD" }).remote(i)));
      const perNode: Record<string, number> = {};
      for (const x of res) perNode[x.node] = (perNode[x.node] ?? 0) + 1;
      const ok = res.every((x, i) => x.i === i);
      const bigRes = await get(Array.from({ length: 6 }, (_, i) => big.options({ schedulingStrategy: "SPREAD" }).remote(i)));
      const bigOk = bigRes.every((x, i) => x.d.length === 2_000_000 && x.d[0] === i && x.d[1_999_999] === i);
      const s1 = await stats();
      console.log(JSON.stringify({ ok, bigOk, perNode, bigNodes: [...new Set(bigRes.map((x) => x.node))].sort(), s0, s1 }));
    }`);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const out = last(r.stdout);
  assert.equal(out.ok, true);
  assert.equal(out.bigOk, true);
  const all = [head.id, a.id, b.id].sort();
  // spread over the three nodes, each with a fair share
  assert.deepEqual(Object.keys(out.perNode).sort(), all);
  for (const id of all) assert.ok(out.perNode[id] >= 300, JSON.stringify(out.perNode));
  // (a burst right after another may find one node's worker not yet given back: two nodes at least)
  assert.ok(out.bigNodes.length >= 2 && out.bigNodes.some((n: string) => n !== head.id), JSON.stringify(out));
  // The head agent placed and forwarded none of them: it granted a few leases.
  const d = (k: string) => out.s1[k] - out.s0[k];
  assert.equal(d("submitted"), 0, JSON.stringify(out));
  assert.equal(d("forwarded"), 0, JSON.stringify(out));
  assert.ok(d("remoteLeases") >= 2, JSON.stringify(out));
  assert.ok(d("localLeases") + d("remoteLeases") <= 40, JSON.stringify(out));
  // The large results written on the worker nodes are freed once the job (their owner) is done.
  await waitFor(() => (bigFiles("mnlease", a.id).length === 0 && bigFiles("mnlease", b.id).length === 0) || undefined, 15_000, "the remote results to be freed");
});

test("a node killed mid-lease: its tasks in flight are retried elsewhere and every result is right", async () => {
  const { c, a } = await cluster("mnleasekill");
  const goFile = path.join(c.home, "go");
  const src = `
    import { remote, get, nodes, getRuntimeContext } from "tray";
    import fs from "node:fs";
    // tiny: queued on leases (long tasks take the agent's path)
    const work = remote((i: number) => ({ i, node: getRuntimeContext().nodeId }));
    export default async function main(args: string[]) {
      const [retries, goFile] = args;
      const n = 40000;
      const f = work.options({ schedulingStrategy: "SPREAD", maxRetries: Number(retries) });
      const refs = Array.from({ length: n }, (_, i) => f.remote(i));
      // the first results from every node: the leases are up
      await get(refs.slice(0, 30));
      const atKill = ((await nodes()).find((x: any) => x.isHead) as any).taskStats;
      fs.writeFileSync(goFile, "");
      console.log("LEASED");
      let ok = 0;
      const errors: Record<string, number> = {};
      const seen = new Set<string>();
      for (let i = 0; i < n; i++) {
        try {
          const v = await get(refs[i]!);
          if (v.i === i) ok++;
          seen.add(v.node);
        } catch (e: any) {
          errors[e.name] = (errors[e.name] ?? 0) + 1;
        }
      }
      console.log(JSON.stringify({ ok, errors, n, nodes: [...seen], atKill }));
    }`;
  const run = async (retries: number) => {
    try { fs.rmSync(goFile); } catch { /* first run */ }
    return c.startJob(src, [String(retries), goFile]);
  };

  // With retries: every task completes, the lost ones on the other nodes.
  const j = await run(3);
  let exited = false;
  void j.code.then(() => (exited = true));
  await waitFor(() => fs.existsSync(goFile) || (exited && "exited") || undefined, 60_000, "the job's leases");
  assert.equal(exited, false, j.err() + j.out());
  await new Promise((r) => setTimeout(r, 300));
  process.kill(a.pid, "SIGKILL");
  assert.equal(await j.code, 0, j.err() + j.out());
  const res = last(j.out());
  assert.equal(res.ok, res.n, JSON.stringify(res));
  assert.deepEqual(res.errors, {});
  assert.equal(res.atKill.submitted, 0, JSON.stringify(res));
});

test("a node killed mid-lease with maxRetries 0: the tasks it had fail with WorkerCrashedError or NodeDiedError, the others succeed", async () => {
  const { c, a } = await cluster("mnleasekill0");
  const goFile = path.join(c.home, "go");
  const j = c.startJob(`
    import { remote, get, nodes } from "tray";
    import fs from "node:fs";
    const work = remote((i: number) => i);
    const stats = async () => ((await nodes()).find((n: any) => n.isHead) as any).taskStats;
    export default async function main(args: string[]) {
      const [goFile] = args;
      const n = 40000;
      const f = work.options({ schedulingStrategy: "SPREAD", maxRetries: 0 });
      const refs = Array.from({ length: n }, (_, i) => f.remote(i));
      await get(refs.slice(0, 30));
      const atKill = await stats();
      fs.writeFileSync(goFile, "");
      let ok = 0;
      const errors: Record<string, number> = {};
      for (let i = 0; i < n; i++) {
        try {
          if ((await get(refs[i]!)) === i) ok++;
        } catch (e: any) {
          errors[e.name] = (errors[e.name] ?? 0) + 1;
        }
      }
      console.log(JSON.stringify({ ok, errors, n, atKill }));
    }`, [goFile]);
  await waitFor(() => fs.existsSync(goFile) || undefined, 60_000, "the job's leases");
  await new Promise((r) => setTimeout(r, 300));
  process.kill(a.pid, "SIGKILL");
  assert.equal(await j.code, 0, j.err() + j.out());
  const res = last(j.out());
  const failed = Object.values(res.errors as Record<string, number>).reduce((x, y) => x + y, 0);
  assert.ok(failed > 0, JSON.stringify(res));
  for (const name of Object.keys(res.errors)) assert.ok(["WorkerCrashedError", "NodeDiedError"].includes(name), JSON.stringify(res));
  assert.equal(res.ok + failed, res.n, JSON.stringify(res));
  assert.ok(res.ok > res.n / 2, JSON.stringify(res));
  // Until the kill, no task went through the head agent: they were all on leases.
  assert.equal(res.atKill.submitted, 0, JSON.stringify(res));
  assert.ok(res.atKill.remoteLeases >= 2, JSON.stringify(res));
});

test("a large result left on a leased worker's node that then dies is rebuilt from lineage when read", async () => {
  const { c, a } = await cluster("mnleaselin");
  const goFile = path.join(c.home, "go");
  const j = c.startJob(`
    import { remote, get, nodes, getRuntimeContext } from "tray";
    import fs from "node:fs";
    // Each takes a moment: instant ones could all be done over the first leases granted (the
    // head's and B's) before node A's arrives, leaving nothing on A (seen under load).
    const big = remote(async (i: number) => {
      await new Promise((r) => setTimeout(r, 300));
      return { node: getRuntimeContext().nodeId, d: new Float64Array(250_000).fill(i) };
    });
    export default async function main(args: string[]) {
      const [goFile] = args;
      const refs = Array.from({ length: 6 }, (_, i) => big.options({ schedulingStrategy: "SPREAD" }).remote(i));
      console.log("SUBMITTED");
      while (!fs.existsSync(goFile)) await new Promise((r) => setTimeout(r, 20));
      const vs = await get(refs);
      const stats = ((await nodes()).find((n: any) => n.isHead) as any).taskStats;
      console.log(JSON.stringify({ ok: vs.every((v, i) => v.d.length === 250_000 && v.d[0] === i && v.d[249_999] === i), nodes: vs.map((v) => v.node), stats }));
    }`, [goFile]);
  await j.saw(/SUBMITTED/);
  // its results on node A, written there by the worker leased to the driver
  await waitFor(() => bigFiles("mnleaselin", a.id).length > 0 || undefined, 30_000, "a result in node A's store");
  await new Promise((r) => setTimeout(r, 500));
  process.kill(a.pid, "SIGKILL");
  await waitFor(async () => {
    const s = JSON.parse((await c.cli(["status", "--json"])).stdout.trim().split("\n")[0]!);
    return s.nodes.find((n: any) => n.nodeId === a.id)?.alive === false || undefined;
  }, 20_000, "node A to be reported dead");
  fs.writeFileSync(goFile, "");
  assert.equal(await j.code, 0, j.err() + j.out());
  const res = last(j.out());
  assert.equal(res.ok, true, JSON.stringify(res));
  // the two that ran on A were run again elsewhere
  assert.ok(!res.nodes.includes(a.id), JSON.stringify(res));
});

test("/direct on a node's peer port: no cluster token → 401; the token but no lease → 403", async () => {
  const { c, a } = await cluster("mnleaseauth");
  const ready = JSON.parse(fs.readFileSync(path.join(c.home, "clusters", "mnleaseauth", a.name, "ready.json"), "utf8"));
  const port = Number(String(ready.listen).split(":").pop());
  const upgrade = (headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, path: `/direct/${a.id.slice(0, 8)}w1`, headers: { connection: "Upgrade", upgrade: "tray-direct", ...headers } });
      req.on("upgrade", (_res, socket) => {
        socket.destroy();
        resolve(101);
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
  assert.equal(await upgrade({}), 401);
  assert.equal(await upgrade({ authorization: "Bearer wrong" }), 401);
  assert.equal(await upgrade({ authorization: `Bearer ${c.token()}`, "x-tray-lease": "guess" }), 403);
});
