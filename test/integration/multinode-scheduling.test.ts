// Several node agents on loopback (a head and two workers started by `tray up` from one YAML):
// status lists every node, SPREAD/affinity/custom resources place tasks where they must run,
// large objects move between stores, reference counts span nodes, infeasible demand is
// reported, and an agent holding the wrong token is refused.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { localClusterYaml, TestCluster, ROOT, waitFor } from "../helpers/cluster.js";

process.env.TRAY_HEARTBEAT_MS = "200";
process.env.TRAY_NODE_TIMEOUT_MS = "1500";
process.env.TRAY_INFEASIBLE_GRACE_MS = "4000";

const YAML = localClusterYaml("mnsched", {
  workers: { worker: { resources: { CPU: 1 }, count: 1 }, special: { resources: { CPU: 1, special: 2 }, count: 1 } },
});
const c = new TestCluster("mnsched", YAML);
let ids: { head: string; worker: string; special: string };
before(async () => {
  await c.up();
  const nodes = c.state().nodes as Array<{ id: string; nodeType: string }>;
  const byType = (t: string) => nodes.find((n) => n.nodeType === t)!.id;
  ids = { head: byType("head"), worker: byType("worker"), special: byType("special") };
});
after(() => c.down());

const last = (out: string) => JSON.parse(out.trim().split("\n").pop()!);

test("tray status --json lists every node, alive, with its resources", async () => {
  const r = await c.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout.trim().split("\n")[0]!);
  const nodes = s.nodes as any[];
  assert.equal(nodes.length, 3);
  assert.deepEqual(new Set(nodes.map((n) => n.nodeId)), new Set(Object.values(ids)));
  for (const n of nodes) {
    assert.equal(n.alive, true, n.name);
    assert.equal(n.resources.CPU, 1, n.name);
    assert.ok(n.available && typeof n.available.CPU === "number", n.name);
  }
  assert.equal(nodes.find((n) => n.nodeId === ids.special).resources.special, 2);
  assert.equal(nodes.filter((n) => n.isHead).length, 1);
  assert.equal(nodes.find((n) => n.isHead).nodeId, ids.head);
  const text = await c.cli(["status"]);
  for (const n of nodes) assert.match(text.stdout, new RegExp(n.name));
});

test("SPREAD puts tasks on every node; a custom resource only one node has runs there", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    const where = remote(async () => { await new Promise(r => setTimeout(r, 50)); return getRuntimeContext().nodeId; });
    const special = remote(() => getRuntimeContext().nodeId, { resources: { special: 1 } });
    export default async function main() {
      const spread = await get(Array.from({ length: 9 }, () => where.options({ schedulingStrategy: "SPREAD" }).remote()));
      const sp = await get(Array.from({ length: 4 }, () => special.remote()));
      console.log(JSON.stringify({ spread: [...new Set(spread)].sort(), special: [...new Set(sp)] }));
    }`);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const out = last(r.stdout);
  assert.deepEqual(out.spread, Object.values(ids).sort());
  assert.deepEqual(out.special, [ids.special]);
});

test("node affinity: hard pins to the node, soft falls back when the node cannot run it, hard on an unknown node fails", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    const where = remote(() => getRuntimeContext().nodeId);
    export default async function main(args: string[]) {
      const [worker, special] = args;
      const hard = await get(Array.from({ length: 4 }, () => where.options({ schedulingStrategy: { nodeId: worker, soft: false } }).remote()));
      const hard2 = await get(where.options({ schedulingStrategy: { nodeId: special } }).remote());
      // soft affinity to a node that can never provide the demand: runs elsewhere
      const soft = await get(where.options({ resources: { special: 1 }, schedulingStrategy: { nodeId: worker, soft: true } }).remote());
      let hardErr = "";
      try { await get(where.options({ schedulingStrategy: { nodeId: "ffffffffffffffff", soft: false } }).remote()); } catch (e: any) { hardErr = e.name + ": " + e.message; }
      console.log(JSON.stringify({ hard: [...new Set(hard)], hard2, soft, hardErr }));
    }`, [ids.worker, ids.special]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const out = last(r.stdout);
  assert.deepEqual(out.hard, [ids.worker]);
  assert.equal(out.hard2, ids.special);
  assert.equal(out.soft, ids.special);
  assert.match(out.hardErr, /ffffffffffffffff/);
});

test("large objects move between nodes with their content; a second get reads the local copy", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    import fs from "node:fs";
    import path from "node:path";
    const big = remote((n: number) => { const a = new Float64Array(n); for (let i = 0; i < n; i++) a[i] = i % 1000; return a; });
    const sum = remote((xs: Float64Array) => ({ node: getRuntimeContext().nodeId, s: xs.reduce((a, b) => a + b, 0), n: xs.length }));
    export default async function main(args: string[]) {
      const [worker, special] = args;
      const n = 3_000_000; // 24 MB: several chunks
      const ref = big.options({ schedulingStrategy: { nodeId: worker } }).remote(n);
      let expect = 0; for (let i = 0; i < n; i++) expect += i % 1000;
      // the worker-made object is read on the special node (node to node), and by this driver on the head
      const remoteSum = await get(sum.options({ schedulingStrategy: { nodeId: special } }).remote(ref));
      const a = await get(ref);
      const dir = process.env.TRAY_STORE_DIR!;
      const file = fs.readdirSync(dir).map((f) => path.join(dir, f)).find((f) => fs.statSync(f).size === n * 8);
      const st1 = file ? fs.statSync(file) : undefined;
      await new Promise((r) => setTimeout(r, 30));
      const b = await get(ref);
      const st2 = file ? fs.statSync(file) : undefined;
      let ok = a.length === n && b.length === n;
      for (let i = 0; i < n; i += 997) ok &&= a[i] === i % 1000 && b[i] === i % 1000;
      console.log(JSON.stringify({
        remoteSum: remoteSum.s === expect && remoteSum.n === n, remoteNode: remoteSum.node, ok,
        localCopy: !!file, sameCopy: !!st1 && st1.ino === st2!.ino && st1.mtimeMs === st2!.mtimeMs,
        driverNode: getRuntimeContext().nodeId,
      }));
    }`, [ids.worker, ids.special]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.deepEqual(last(r.stdout), { remoteSum: true, remoteNode: ids.special, ok: true, localCopy: true, sameCopy: true, driverNode: ids.head });
});

const shmFiles = (id: string) => {
  const dir = `/dev/shm/tray-mnsched-${id.slice(0, 8)}`;
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => fs.statSync(path.join(dir, f)).size >= 1_000_000) : [];
};

test("reference counting spans nodes: dropping the refs frees the owner's object and every remote copy", async () => {
  const r = await c.spawnCli(["submit", writeJob(`
    import { remote, get, put, getRuntimeContext } from "tray";
    const big = remote((n: number) => new Uint8Array(n).fill(9));
    const len = remote((x: Uint8Array) => x.length);
    export default async function main(args: string[]) {
      const [worker, special] = args;
      let ref: any = big.options({ schedulingStrategy: { nodeId: worker } }).remote(4_000_000);
      let p: any = put(new Uint8Array(3_000_000).fill(1));
      const n1 = await get(len.options({ schedulingStrategy: { nodeId: special } }).remote(ref));
      const n2 = await get(len.options({ schedulingStrategy: { nodeId: worker } }).remote(p));
      const local = await get(ref);
      console.log("HELD " + JSON.stringify({ n1, n2, local: local.length }));
      await new Promise((r) => setTimeout(r, 2500));
      ref = p = undefined;
      console.log("DROPPED");
      for (let i = 0; i < 40; i++) { (globalThis as any).gc?.(); await new Promise((r) => setTimeout(r, 250)); }
    }`), "--", ids.worker, ids.special]);
  let out = "";
  r.stdout.on("data", (d) => (out += d));
  r.stderr.on("data", (d) => (out += d));
  await waitFor(() => /HELD/.test(out) || undefined, 60_000, "the job to hold its objects");
  const held = { head: shmFiles(ids.head).length, worker: shmFiles(ids.worker).length, special: shmFiles(ids.special).length };
  assert.match(out, /HELD \{"n1":4000000,"n2":3000000,"local":4000000\}/);
  // worker: the 4 MB result and the put's copy; special: a copy of the result; head: the put and a copy of the result
  assert.ok(held.worker >= 2 && held.special >= 1 && held.head >= 2, JSON.stringify(held));
  await waitFor(() => /DROPPED/.test(out) || undefined, 20_000, "the job to drop its refs");
  await waitFor(() => (shmFiles(ids.head).length + shmFiles(ids.worker).length + shmFiles(ids.special).length === 0 ? true : undefined), 15_000, "every copy to be freed");
  r.kill("SIGINT");
});

function writeJob(src: string): string {
  const f = path.join(c.home, `job-${Math.random().toString(36).slice(2)}.ts`);
  fs.writeFileSync(f, src);
  return f;
}

test("infeasible demand shows in tray status and the task fails with InfeasibleTaskError after the grace period", async () => {
  const child = c.spawnCli(["submit", writeJob(`
    import { remote, get } from "tray";
    const f = remote(() => 1, { resources: { unobtainium: 1 } });
    export default async function main() {
      try { await get(f.remote()); console.log(JSON.stringify({ name: "none" })); }
      catch (e: any) { console.log(JSON.stringify({ name: e.name, msg: e.message })); }
    }`)]);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const code = new Promise<number>((res) => child.on("exit", (c) => res(c ?? 1)));
  const shown = await waitFor(async () => {
    const s = await c.cli(["status", "--json"]);
    const st = JSON.parse(s.stdout.trim().split("\n")[0]!);
    const d = st.nodes.flatMap((n: any) => n.pending ?? []).find((d: any) => d.resources.unobtainium === 1);
    if (!d) return undefined;
    const text = await c.cli(["status"]);
    return { d, text: text.stdout };
  }, 15_000, "the infeasible demand in tray status");
  assert.equal(shown.d.infeasible, true);
  assert.match(shown.text, /unobtainium.*INFEASIBLE/);
  assert.equal(await code, 0);
  const res = last(out);
  assert.equal(res.name, "InfeasibleTaskError");
  assert.match(res.msg, /unobtainium/);
});

test("a node agent holding the wrong token is refused and exits with a clear message", async () => {
  const wrong = path.join(c.home, "wrong-token");
  fs.writeFileSync(wrong, "not-the-token\n", { mode: 0o600 });
  const state = path.join(c.home, "intruder");
  fs.mkdirSync(state, { recursive: true });
  const s = c.state();
  const child = spawn(process.execPath, [path.join(ROOT, "dist/agent.js"), "agent", "--role", "node", "--cluster", "mnsched", "--head", `ws://127.0.0.1:${s.head.apiPort}`,
    "--token-file", wrong, "--state-dir", state, "--listen", "127.0.0.1:0", "--node-name", "intruder", "--node-type", "worker", "--resources", '{"CPU":1}'], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  child.stdout.on("data", (d) => (err += d));
  const code = await new Promise<number | null>((res) => {
    const t = setTimeout(() => { child.kill("SIGKILL"); res(null); }, 20_000);
    child.on("exit", (c) => { clearTimeout(t); res(c); });
  });
  assert.notEqual(code, null, "the agent should exit by itself");
  assert.notEqual(code, 0);
  assert.match(err, /refused this node's token/);
  const st = JSON.parse((await c.cli(["status", "--json"])).stdout.trim().split("\n")[0]!);
  assert.equal(st.nodes.length, 3);
  assert.ok(!st.nodes.some((n: any) => n.name === "intruder"));
});
