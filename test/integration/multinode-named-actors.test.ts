// A detached named actor on a worker node outlives its job and a restart of the head:
// the restarted head learns the name back from the node that hosts it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { localClusterYaml, TestCluster, waitFor } from "../helpers/cluster.js";

const yaml = localClusterYaml("mnnamed", { workers: { worker: { resources: { CPU: 1, keeper: 1 }, count: 1 } } });
const c = new TestCluster("mnnamed", yaml);
before(() => c.up());
after(() => c.down());

const lastLine = (s: string) => s.trim().split("\n").pop()!;

test("a detached named actor keeps its state across jobs and a head restart", async () => {
  const first = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    const Keeper = remote(class Keeper { n = 0; inc() { return ++this.n; } node() { return getRuntimeContext().nodeId; } });
    export default async function main() {
      const k = Keeper.options({ name: "keeper", lifetime: "detached", resources: { keeper: 1 } }).remote();
      await get(k.inc.remote());
      console.log(JSON.stringify({ n: await get(k.inc.remote()), node: await get(k.node.remote()), driver: getRuntimeContext().nodeId }));
    }`);
  assert.equal(first.code, 0, first.stderr);
  const a = JSON.parse(lastLine(first.stdout));
  assert.equal(a.n, 2);
  assert.notEqual(a.node, a.driver, "the actor lives on the worker node");

  process.kill(c.headPid(), "SIGKILL");
  const up = await c.cli(["up", c.configPath]);
  assert.equal(up.code, 0, up.stderr);
  await waitFor(async () => {
    const s = JSON.parse((await c.cli(["status", "--json"])).stdout);
    return s.nodes.filter((n: any) => n.alive).length === 2 ? true : undefined;
  }, 20_000, "the worker node to rejoin the restarted head");

  const second = await c.submit(`
    import { get, getActor } from "tray";
    export default async function main() {
      const k = await getActor("keeper");
      console.log(JSON.stringify({ n: await get(k.inc.remote()), node: await get(k.node.remote()) }));
    }`);
  assert.equal(second.code, 0, second.stderr);
  const b = JSON.parse(lastLine(second.stdout));
  assert.equal(b.n, 3, "same actor, same state");
  assert.equal(b.node, a.node);
});

// A node learns the cluster (the head included) from the view the head sends as it registers
// the node. That view was once dropped (the node handled its link's messages only after the
// register's reply), so until the head's next periodic broadcast, every TRAY_HEARTBEAT_MS, the
// node knew no head and silently dropped what it sent there: a job started right after
// `tray up`, or right after the node rejoined a restarted head, waited forever for its actor's
// first answer (seen once in a full `npm test`). A slow heartbeat here makes that window
// seconds long instead of up to 500 ms, so each job below starts well inside it.
test("calls to an actor on a node that just joined, or just rejoined a restarted head, are answered", async () => {
  const slow = { TRAY_HEARTBEAT_MS: "10000", TRAY_NODE_TIMEOUT_MS: "60000" };
  const yaml2 = localClusterYaml("mnjoin", { workers: { worker: { resources: { CPU: 1, keeper: 1 }, count: 1 } } });
  const c2 = new TestCluster("mnjoin", yaml2);
  const submit = (src: string) => {
    const file = path.join(c2.home, `job-${Math.random().toString(36).slice(2)}.ts`);
    fs.writeFileSync(file, src);
    return c2.cli(["submit", file], { timeoutMs: 30_000 });
  };
  try {
    const up = await c2.cli(["up", c2.configPath], { env: slow });
    assert.equal(up.code, 0, up.stderr);
    const first = await submit(`
      import { remote, get } from "tray";
      const Keeper = remote(class Keeper { n = 0; inc() { return ++this.n; } });
      export default async function main() {
        const k = Keeper.options({ name: "keeper", lifetime: "detached", resources: { keeper: 1 } }).remote();
        console.log(JSON.stringify({ n: await get(k.inc.remote()) }));
      }`);
    assert.equal(first.code, 0, `the first call was not answered: ${first.stderr}${first.stdout}`);
    assert.equal(JSON.parse(lastLine(first.stdout)).n, 1);

    process.kill(c2.headPid(), "SIGKILL");
    const again = await c2.cli(["up", c2.configPath], { env: slow });
    assert.equal(again.code, 0, again.stderr);
    await waitFor(async () => {
      const s = JSON.parse((await c2.cli(["status", "--json"])).stdout);
      return s.nodes.filter((n: any) => n.alive).length === 2 ? true : undefined;
    }, 20_000, "the worker node to rejoin the restarted head");
    const second = await submit(`
      import { get, getActor } from "tray";
      export default async function main() {
        const k = await getActor("keeper");
        console.log(JSON.stringify({ n: await get(k.inc.remote()) }));
      }`);
    assert.equal(second.code, 0, `the call after the head restart was not answered: ${second.stderr}${second.stdout}`);
    assert.equal(JSON.parse(lastLine(second.stdout)).n, 2);
  } finally {
    await c2.down();
  }
});
