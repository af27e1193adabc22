// Large objects between nodes and in the hands of readers, with tray's native helpers (mapped
// reads, sendfile, transfers into mapped store files over the same-host object socket) and
// without them (TRAY_NATIVE=0: plain reads and writes). Every byte is checked, both ways.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { localClusterYaml, TestCluster } from "../helpers/cluster.js";
import { native } from "../../src/runtime/native.js";

const JOB = `
  import { remote, get, put, getRuntimeContext } from "tray";
  import type { ObjectRef } from "tray";
  import { createHash } from "node:crypto";

  const MB = 1024 * 1024;
  function pattern(n: number, salt: number): Uint8Array {
    const b = new Uint8Array(n);
    const v = new DataView(b.buffer);
    for (let i = 0; i + 4 <= n; i += 4) v.setUint32(i, (i * 2654435761 + salt) >>> 0, true);
    return b;
  }
  const digest = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

  // Runs on the worker node: makes the object there.
  const make = remote((n: number, salt: number) => pattern(n, salt), { resources: { far: 1 } });
  // Runs on the worker node: reads an object made on the head's node, returns its digest.
  const digestThere = remote(async (refs: ObjectRef<Uint8Array>[]) => {
    const v = await get(refs[0]!);
    return { d: digest(v), len: v.length, node: getRuntimeContext().nodeId };
  }, { resources: { far: 1 } });

  export default async function main() {
    const out: Record<string, unknown> = {};
    // 1. worker node -> head node (the driver reads it), odd size, 24 MB
    const n1 = 24 * MB + 13;
    const r1 = make.remote(n1, 1);
    const v1 = await get(r1);
    out.pull = v1.length === n1 && digest(v1) === digest(pattern(n1, 1));
    // 2. head node -> worker node
    const p2 = pattern(17 * MB + 1, 2);
    const r2 = put(p2);
    const d2 = await get(digestThere.remote([r2]));
    out.push = d2.len === p2.length && d2.d === digest(p2) && d2.node !== getRuntimeContext().nodeId;
    // 3. writing to a value read never changes the object, for this reader or others
    v1.fill(0, 0, 5 * MB);
    const again = await get(r1);
    out.cow = digest(again) === digest(pattern(n1, 1));
    const d1 = await get(digestThere.remote([r1]));
    out.cowThere = d1.d === digest(pattern(n1, 1));
    // 4. a value outlives its ref: objects of the same size written after it never show in it
    let r4: ObjectRef<Uint8Array> | undefined = put(pattern(9 * MB, 4));
    const v4 = await get(r4);
    r4 = undefined;
    for (let i = 0; i < 6; i++) {
      (globalThis as any).gc?.();
      await new Promise((r) => setTimeout(r, 30));
      const other = put(new Uint8Array(9 * MB).fill(0xee));
      await get(other);
    }
    const r5 = make.remote(9 * MB, 5);
    await get(digestThere.remote([r5]));
    out.held = digest(v4) === digest(pattern(9 * MB, 4));
    console.log(JSON.stringify(out));
  }`;

const expected = { pull: true, push: true, cow: true, cowThere: true, held: true };

for (const mode of ["native", "plain"] as const) {
  describe(`large objects (${mode} reads and transfers)`, () => {
    const name = `large${mode}`;
    const c = new TestCluster(name, localClusterYaml(name, { workers: { worker: { resources: { CPU: 1, far: 1 }, count: 1 } } }));
    const env: Record<string, string> = mode === "plain" ? { TRAY_NATIVE: "0" } : {};
    before(async () => {
      const saved = process.env.TRAY_NATIVE;
      if (mode === "plain") process.env.TRAY_NATIVE = "0"; // the agents inherit it from `tray up`
      try {
        await c.up();
      } finally {
        if (saved === undefined) delete process.env.TRAY_NATIVE;
        else process.env.TRAY_NATIVE = saved;
      }
    });
    after(() => c.down());

    test("every byte arrives both ways, a reader's writes stay its own, a held value never changes", { skip: mode === "native" && !native() ? "native helpers not built here" : false }, async () => {
      const r = await c.cli(["submit", writeJob(c), "--"], { env });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").pop()!), expected);
    });
  });
}

function writeJob(c: TestCluster): string {
  const f = `${c.home}/large-job.ts`;
  fs.writeFileSync(f, JOB);
  return f;
}
