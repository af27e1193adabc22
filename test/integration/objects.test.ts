// Objects: large values live in the node's /dev/shm store while referenced and are freed
// when no reference remains (a loop of 10 MB objects does not grow the store); refs passed
// directly to tasks are resolved, nested refs stay refs; values keep their types.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

const c = new TestCluster("objects");
before(() => c.up());
after(() => c.down());

// In the job: the store directory of this cluster's node, and a way to wait for a file to go.
const STORE = `
  import fs from "node:fs";
  import path from "node:path";
  function storeDir() {
    const d = process.env.TRAY_STORE_DIR!;
    if (!d.startsWith("/dev/shm/tray-objects-")) throw new Error("the store is not in /dev/shm: " + d);
    return d;
  }
  function storeFile(ref: any) { return path.join(storeDir(), ref.id.replace(/[^A-Za-z0-9._-]/g, "_")); }
  async function collectUntil(cond: () => boolean, ms = 10000) {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) return false;
      (globalThis as any).gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }
  // Bytes of the regular files under dir (objects, and freed files the store parks for reuse);
  // files may go between readdir and stat.
  function dirBytes(dir: string, objectsOnly = false): number {
    let n = 0;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (objectsOnly && e.name.startsWith(".")) continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) n += dirBytes(p);
      else n += fs.statSync(p, { throwIfNoEntry: false })?.size ?? 0;
    }
    return n;
  }`;

test("a value of 100 KiB or more lives in /dev/shm while referenced, and its file goes once no reference remains", async () => {
  const r = await c.submit(`
    import { remote, put, get } from "tray";
    ${STORE}
    const make = remote((n: number) => new Uint8Array(n).fill(9));
    export default async function main() {
      let big: any = put(new Uint8Array(200 * 1024).fill(1));
      let small: any = put(new Uint8Array(50 * 1024).fill(2));
      let result: any = make.remote(300 * 1024);
      await get(result);
      const bigFile = storeFile(big), resultFile = storeFile(result);
      const before = {
        big: fs.existsSync(bigFile) && fs.statSync(bigFile).size >= 200 * 1024,
        result: fs.existsSync(resultFile) && fs.statSync(resultFile).size >= 300 * 1024,
        small: fs.existsSync(storeFile(small)),
      };
      const read = (await get(big) as Uint8Array)[1000] + (await get(result) as Uint8Array)[1000];
      big = undefined; result = undefined; small = undefined;
      const freed = await collectUntil(() => !fs.existsSync(bigFile) && !fs.existsSync(resultFile));
      console.log(JSON.stringify({ before, read, freed }));
    }`);
  assert.deepEqual(okJson(r), { before: { big: true, result: true, small: false }, read: 10, freed: true });
});

test("refs passed directly to a task are resolved; refs nested in arguments stay refs", async () => {
  const r = await c.submit(`
    import { remote, put, get, ObjectRef } from "tray";
    const inspect = remote(async (direct: any, nested: { inner: any; list: any[] }) => ({
      direct,
      directIsRef: direct instanceof ObjectRef,
      nestedIsRef: nested.inner instanceof ObjectRef,
      nestedValue: await get(nested.inner),
      listValues: await get(nested.list),
    }));
    const produce = remote(() => "from a task");
    const big = remote((b: Uint8Array) => b.length + b[b.length - 1]);
    export default async function main() {
      const a = put({ x: 1 });
      const out = await get(inspect.remote(a, { inner: put("inner"), list: [produce.remote(), put(3)] }));
      const bigLen = await get(big.remote(put(new Uint8Array(500_000).fill(4))));
      const chained = await get(big.remote(remote((n: number) => new Uint8Array(n).fill(5)).remote(200_000)));
      console.log(JSON.stringify({ ...out, bigLen, chained }));
    }`);
  assert.deepEqual(okJson(r), {
    direct: { x: 1 },
    directIsRef: false,
    nestedIsRef: true,
    nestedValue: "inner",
    listValues: ["from a task", 3],
    bigLen: 500_004,
    chained: 200_005,
  });
});

test("typed arrays, Buffers and structured values keep their types and bytes through the store", async () => {
  const r = await c.submit(`
    import { remote, put, get } from "tray";
    const echo = remote((v: any) => v);
    export default async function main() {
      const f64 = new Float64Array(50_000).map((_, i) => i / 3);
      const buf = Buffer.alloc(300_000, 7);
      const i32 = new Int32Array([1, -2, 3]);
      const map = new Map([["k", new Uint8Array(200_000).fill(3)]]);
      const [f, b, i, m] = await get([echo.remote(put(f64)), echo.remote(buf), echo.remote(i32), echo.remote(map)]) as any[];
      console.log(JSON.stringify({
        f: f instanceof Float64Array && f.length === 50_000 && f[49_999] === 49_999 / 3,
        b: Buffer.isBuffer(b) && b.length === 300_000 && b[299_999] === 7,
        i: i instanceof Int32Array && Array.from(i).join() === "1,-2,3",
        m: m instanceof Map && m.get("k").length === 200_000 && m.get("k")[5] === 3,
      }));
    }`);
  assert.deepEqual(okJson(r), { f: true, b: true, i: true, m: true });
});

test("typed arrays are stored as their raw bytes (no re-encoding), and a ref nested in a stored value keeps its object alive", async () => {
  const r = await c.submit(`
    import { put, get } from "tray";
    ${STORE}
    export default async function main() {
      const f = put(new Float64Array(1_000_000).fill(0.5));
      const rawSize = fs.statSync(storeFile(f)).size;
      let inner: any = put(new Uint8Array(300_000).fill(6));
      const innerFile = storeFile(inner);
      const outer = put({ label: "box", inner });
      inner = undefined;
      // Collect: the driver's own ref to inner is gone; only outer holds it now.
      for (let i = 0; i < 20; i++) { (globalThis as any).gc(); await new Promise((r) => setTimeout(r, 10)); }
      const stillThere = fs.existsSync(innerFile);
      const box: any = await get(outer);
      const back = await get(box.inner) as Uint8Array;
      console.log(JSON.stringify({ rawSize, stillThere, label: box.label, innerOk: back.length === 300_000 && back[299_999] === 6 }));
    }`);
  assert.deepEqual(okJson(r), { rawSize: 8_000_000, stillThere: true, label: "box", innerOk: true });
});

test("creating and dropping 3 GB of 10 MB objects (put and task results) does not grow the store", async () => {
  const r = await c.submit(`
    import { remote, put, get, nodes } from "tray";
    ${STORE}
    const make = remote((i: number) => Buffer.alloc(10_000_000, i & 255));
    async function used() { return (await nodes())[0].store.used; }
    export default async function main() {
      const dir = storeDir();
      let peakUsed = 0, peakDir = 0, ok = 0; const bad: any[] = [];
      // In a function of its own: a suspended async frame may keep its last locals alive.
      const loop = async () => {
        for (let i = 0; i < 300; i++) {
          const ref = i % 2 ? put(Buffer.alloc(10_000_000, i & 255)) : make.remote(i);
          const v = await get(ref) as Buffer;
          if (v.length === 10_000_000 && v[9_999_999] === (i & 255) && v[0] === (i & 255)) ok++;
          else bad.push({ i, len: v.length, first: v[0], last: v[9_999_999], id: (ref as any).id });
          if (i % 10 === 9) {
            peakUsed = Math.max(peakUsed, await used());
            peakDir = Math.max(peakDir, dirBytes(dir));
          }
        }
      };
      await loop();
      await collectUntil(() => dirBytes(dir, true) === 0);
      const end = (await nodes())[0].store;
      console.log(JSON.stringify({ ok, peakUsed, peakDir, endUsed: end.used, endObjects: dirBytes(dir, true), endDir: dirBytes(dir), spilled: end.spilledBytes, bad }));
    }`);
  const o = okJson(r);
  assert.equal(o.ok, 300, `every object read back intact: ${JSON.stringify(o)}`);
  const MB = 1_000_000;
  assert.ok(o.peakUsed <= 500 * MB, `store grew to ${o.peakUsed / MB} MB while 3000 MB were created and dropped`);
  assert.ok(o.peakDir <= 500 * MB, `/dev/shm held ${o.peakDir / MB} MB`);
  assert.equal(o.endUsed, 0, `nothing left once every ref is gone: ${JSON.stringify(o)}`);
  assert.equal(o.endObjects, 0, `no object file is left: ${JSON.stringify(o)}`);
  assert.ok(o.endDir <= 500 * MB, `freed files kept for reuse stay bounded: ${JSON.stringify(o)}`);
  assert.equal(o.spilled, 0, `nothing had to be spilled: ${JSON.stringify(o)}`);
});
