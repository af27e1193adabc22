// Reference counting across nodes for refs nested in values: a ref made on one node and
// returned inside a value to another node stays alive as long as the receiver holds it,
// even after the process that made it let go.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { localClusterYaml, TestCluster } from "../helpers/cluster.js";

const yaml = localClusterYaml("mnrefs", { workers: { worker: { resources: { CPU: 1, far: 1 }, count: 1 } } });
const c = new TestCluster("mnrefs", yaml);
before(() => c.up());
after(() => c.down());

test("a nested ref made on another node survives its maker dropping it", async () => {
  const r = await c.submit(`
    import { remote, get, put, getRuntimeContext } from "tray";
    // Runs on the worker node: stores 1 MB there and returns only the ref, nested.
    const make = remote(() => {
      const ref = put(new Uint8Array(1_000_000).fill(9));
      return { ref, node: getRuntimeContext().nodeId };
    }, { resources: { far: 1 } });
    // Also on the worker node: collects garbage so the maker's ObjectRef is surely gone.
    const churn = remote(() => { (globalThis as any).gc?.(); return 1; }, { resources: { far: 1 } });
    export default async function main() {
      const out: any = await get(make.remote());
      for (let i = 0; i < 5; i++) { await get(churn.remote()); await new Promise((r) => setTimeout(r, 100)); }
      const bytes = await get(out.ref) as Uint8Array;
      console.log(JSON.stringify({ remote: out.node !== getRuntimeContext().nodeId, len: bytes.length, v: bytes[123456] }));
    }`);
  assert.equal(r.code, 0, r.stderr);
  const o = JSON.parse(r.stdout.trim().split("\n").pop()!);
  assert.deepEqual(o, { remote: true, len: 1_000_000, v: 9 });
});
