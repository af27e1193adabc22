// A job submitted with `tray submit --env K=V`: every task and actor of it runs with that
// environment (workers are started with it), and its tiny tasks still take the direct path
// (src/runtime/direct-tasks.ts, spread.ts): the leases are on workers started with the job's
// environment, or with the job's plus a task's own runtimeEnv. The agent's counters
// (`nodes()[i].taskStats`, the node the driver runs on) show which path tasks took: `submitted`
// grows by one per task on the agent's path and not at all for a task sent to a leased worker.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { localClusterYaml, TestCluster, waitFor } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

// 4 logical CPUs (on any machine): a lease is granted only for a CPU beyond what is queued on
// the node, so with 2 a parent task plus the one nested task queued at the agent would leave
// no room for a lease, in any job (nor for leases of two environments side by side).
const c = new TestCluster("direnv", localClusterYaml("direnv", { head: { CPU: 4 } }));
before(() => c.up());
after(() => c.down());

const ENV = ["--env", "GREETING=hello world", "--env", "JOBONLY=yes"];

/** What a task or method reports of its environment. */
const SEEN = `
  const seen = () => ({ g: process.env.GREETING ?? null, j: process.env.JOBONLY ?? null, own: process.env.OWN ?? null });
  const key = (s: any) => JSON.stringify(s);
  const stats = async () => ((await nodes()).find((n: any) => n.taskStats) as any).taskStats.submitted as number;
`;

test("tasks (top level, nested, SPREAD) and actor methods of an --env job see its environment, and its tiny tasks take the direct path", async () => {
  const r = await c.submit(
    `
    import { remote, get, nodes } from "tray";
    ${SEEN}
    const probe = remote(() => seen());
    const nested = remote(async (n: number) => {
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push(key(await get(probe.remote())));
      out.push(...(await get(Array.from({ length: n }, () => probe.remote()))).map(key));
      return [...new Set(out)];
    });
    const A = remote(class A {
      m() { return seen(); }
      async viaTask() { return await get(probe.remote()); }
    });
    export default async function main() {
      for (let i = 0; i < 50; i++) await get(probe.remote()); // the first ones start the job's workers through the agent
      const s0 = await stats();
      const top: string[] = [];
      for (let i = 0; i < 1000; i++) top.push(key(await get(probe.remote())));
      top.push(...(await get(Array.from({ length: 3000 }, () => probe.remote()))).map(key));
      const s1 = await stats();
      await get(nested.remote(20)); // the nested tasks' workers started
      const s2 = await stats();
      const inner = await get(nested.remote(500));
      const s3 = await stats();
      await get(Array.from({ length: 300 }, () => probe.options({ schedulingStrategy: "SPREAD" }).remote()));
      const s4 = await stats();
      const spread = (await get(Array.from({ length: 2000 }, () => probe.options({ schedulingStrategy: "SPREAD" }).remote()))).map(key);
      const s5 = await stats();
      const a = A.remote();
      const actor = [key(await get(a.m.remote())), key(await get(a.viaTask.remote()))];
      console.log(JSON.stringify({
        driver: key(seen()), top: [...new Set(top)], inner, spread: [...new Set(spread)], actor: [...new Set(actor)],
        agentTop: s1 - s0, agentNested: s3 - s2, agentSpread: s5 - s4,
      }));
    }`,
    [],
    ENV,
  );
  const j = okJson(r);
  const want = JSON.stringify({ g: "hello world", j: "yes", own: null });
  assert.equal(j.driver, want);
  assert.deepEqual(j.top, [want], "top-level tasks");
  assert.deepEqual(j.inner, [want], "nested tasks");
  assert.deepEqual(j.spread, [want], "SPREAD tasks");
  assert.deepEqual(j.actor, [want], "an actor method, and a task it submits");
  // 4,000 top-level tasks, 1,000 nested ones and 2,000 SPREAD ones: nearly all of them went to
  // leased workers (before leases took the job's environment into account, every one was
  // submitted to the agent).
  assert.ok(j.agentTop < 100, `the agent ran ${j.agentTop} of 4,000 top-level tasks`);
  assert.ok(j.agentNested < 100, `the agent ran ${j.agentNested} of 1,000 nested tasks`);
  assert.ok(j.agentSpread < 200, `the agent ran ${j.agentSpread} of 2,000 SPREAD tasks`);
});

test("a task with its own runtimeEnv.env in an --env job sees the job's environment with its own on top; tasks without one never get its workers", async () => {
  const r = await c.submit(
    `
    import { remote, get, nodes } from "tray";
    ${SEEN}
    const probe = remote(() => seen());
    const own = probe.options({ runtimeEnv: { env: { OWN: "mine", GREETING: "overridden" } } });
    const ownNested = remote(async () => ({ self: seen(), child: await get(probe.remote()) })).options({ runtimeEnv: { env: { OWN: "parent's" } } });
    export default async function main() {
      for (let i = 0; i < 50; i++) await get([probe.remote(), own.remote()]);
      const s0 = await stats();
      const plain: string[] = [], mine: string[] = [];
      // interleaved, one at a time and in bursts: a lease of one environment never runs the other's tasks
      for (let i = 0; i < 500; i++) {
        plain.push(key(await get(probe.remote())));
        mine.push(key(await get(own.remote())));
      }
      const burst = await get(Array.from({ length: 2000 }, (_, i) => (i % 2 ? own : probe).remote()));
      burst.forEach((s: any, i: number) => (i % 2 ? mine : plain).push(key(s)));
      const s1 = await stats();
      const nestedSeen = await get(ownNested.remote());
      console.log(JSON.stringify({ plain: [...new Set(plain)], mine: [...new Set(mine)], nested: nestedSeen, agent: s1 - s0 }));
    }`,
    [],
    ENV,
  );
  const j = okJson(r);
  assert.deepEqual(j.plain, [JSON.stringify({ g: "hello world", j: "yes", own: null })]);
  assert.deepEqual(j.mine, [JSON.stringify({ g: "overridden", j: "yes", own: "mine" })]);
  // its own runtimeEnv is its own: a task it submits gets the job's environment (as on the agent's path)
  assert.deepEqual(j.nested, { self: { g: "hello world", j: "yes", own: "parent's" }, child: { g: "hello world", j: "yes", own: null } });
  assert.ok(j.agent < 150, `the agent ran ${j.agent} of 3,000 tasks`);
});

// Two more nodes (1 CPU each) for the SPREAD tests; node A is killed by the last one.
let mn: { c: TestCluster; nodes: Array<{ id: string; kind: string; pid: number }>; a: { id: string; pid: number } } | undefined;
async function multinode() {
  if (mn) return mn;
  const name = "direnvmn";
  const m = new TestCluster(name, localClusterYaml(name, { head: { CPU: 1 }, workers: { worker: { resources: { CPU: 1 }, count: 2 } } }));
  await m.up();
  const nodes = m.state().nodes as Array<{ id: string; kind: string; pid: number }>;
  return (mn = { c: m, nodes, a: nodes.find((n) => n.kind === "worker")! });
}
after(() => mn?.c.down());

test("SPREAD tasks of an --env job lease workers with its environment on other nodes too", async () => {
  const { c: mc } = await multinode();
  const r = await mc.submit(
    `
    import { remote, get, nodes, getRuntimeContext } from "tray";
    ${SEEN}
    const where = remote(() => ({ node: getRuntimeContext().nodeId, s: seen() })).options({ schedulingStrategy: "SPREAD" });
    const leases = async () => ((await nodes()).find((n: any) => n.taskStats) as any).taskStats;
    export default async function main() {
      // the first burst starts the job's workers on every node (through the agents)
      await get(Array.from({ length: 300 }, () => where.remote()));
      const s0 = await leases();
      const res = await get(Array.from({ length: 3000 }, () => where.remote()));
      const s1 = await leases();
      const perNode: Record<string, number> = {};
      for (const x of res) perNode[x.node] = (perNode[x.node] ?? 0) + 1;
      console.log(JSON.stringify({
        seen: [...new Set(res.map((x: any) => key(x.s)))], perNode,
        submitted: s1.submitted - s0.submitted, remoteLeases: s1.remoteLeases - s0.remoteLeases,
      }));
    }`,
    [],
    ENV,
  );
  const j = okJson(r);
  assert.deepEqual(j.seen, [JSON.stringify({ g: "hello world", j: "yes", own: null })]);
  assert.equal(Object.keys(j.perNode).length, 3, JSON.stringify(j));
  assert.ok(j.remoteLeases >= 1, JSON.stringify(j));
  assert.ok(j.submitted < 300, JSON.stringify(j));
});

test("a large result of an --env job's SPREAD task, left on a node that then dies, is rebuilt with the job's environment", async () => {
  const { c: mc, a, nodes } = await multinode();
  const goFile = path.join(mc.home, "go-lineage");
  const j = mc.startJob(
    `
    import { remote, get, nodes, getRuntimeContext } from "tray";
    import fs from "node:fs";
    const warm = remote(() => 0).options({ schedulingStrategy: "SPREAD" });
    const big = remote((i: number) => ({ node: getRuntimeContext().nodeId, g: process.env.GREETING ?? null, d: new Float64Array(250_000).fill(i) })).options({ schedulingStrategy: "SPREAD" });
    const submitted = async () => ((await nodes()).find((n: any) => n.taskStats) as any).taskStats.submitted;
    export default async function main(args: string[]) {
      const [goFile] = args;
      await get(Array.from({ length: 300 }, () => warm.remote())); // the job's workers on every node
      const s0 = await submitted();
      const refs = Array.from({ length: 9 }, (_, i) => big.remote(i));
      console.log("SUBMITTED"); // (not waited for here: wait() and get() would fetch them)
      while (!fs.existsSync(goFile)) await new Promise((r) => setTimeout(r, 20));
      const agent = (await submitted()) - s0;
      const vs = await get(refs);
      console.log(JSON.stringify({
        ok: vs.every((v: any, i: number) => v.d.length === 250_000 && v.d[0] === i && v.d[249_999] === i),
        nodes: vs.map((v: any) => v.node), gs: [...new Set(vs.map((v: any) => v.g))], agent,
      }));
    }`,
    [goFile],
    ENV,
  );
  await j.saw(/SUBMITTED/);
  // all nine results written, each into the store of the node that ran it, some on node A by a
  // worker leased to the driver
  const big = (node: string) => {
    const dir = `/dev/shm/tray-direnvmn-${node.slice(0, 8)}`;
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((x) => !x.startsWith(".") && fs.statSync(path.join(dir, x)).size >= 1_000_000).length : 0;
  };
  await waitFor(() => nodes.reduce((n, x) => n + big(x.id), 0) >= 9 || undefined, 30_000, "the nine results");
  assert.ok(big(a.id) > 0, `no result on node A; job output: ${j.out()}`);
  process.kill(a.pid, "SIGKILL");
  await waitFor(async () => {
    const s = JSON.parse((await mc.cli(["status", "--json"])).stdout.trim().split("\n")[0]!);
    return s.nodes.find((n: any) => n.nodeId === a.id)?.alive === false || undefined;
  }, 20_000, "node A to be reported dead");
  fs.writeFileSync(goFile, "");
  const res = await j.result();
  assert.equal(res.ok, true, JSON.stringify(res));
  assert.equal(res.agent, 0, `the big tasks went through the agent: ${JSON.stringify(res)}`);
  // the ones that ran on A were run again elsewhere, on workers with the job's environment
  assert.ok(!res.nodes.includes(a.id), JSON.stringify(res));
  assert.deepEqual(res.gs, ["hello world"], JSON.stringify(res));
});
