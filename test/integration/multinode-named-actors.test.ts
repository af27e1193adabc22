// A detached named actor on a worker node outlives its job and a restart of the head:
// the restarted head learns the name back from the node that hosts it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
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
