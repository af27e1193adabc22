// Tasks, actors, objects and errors through a real local cluster, submitted as jobs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";

const c = new TestCluster("basics");
before(() => c.up());
after(() => c.down());

test("tasks, put/get and structured values round-trip", async () => {
  const r = await c.submit(`
    import { remote, get, put } from "tray";
    const echo = remote((v: unknown) => v);
    const add = remote((a: number, b: number) => a + b);
    export default async function main() {
      const v = { m: new Map([[1, "a"]]), s: new Set([2]), d: new Date(5), b: 10n ** 20n, f: new Float64Array([1.5, 2]) };
      const back: any = await get(echo.remote(v));
      const ok = back.m.get(1) === "a" && back.s.has(2) && back.d.getTime() === 5 && back.b === 10n ** 20n && back.f[1] === 2;
      const sum = await get(add.remote(put(40), 2));
      const big = new Uint8Array(300_000).fill(7);
      const bigBack = await get(echo.remote(put(big))) as Uint8Array;
      console.log(JSON.stringify({ ok, sum, bigOk: bigBack.length === 300000 && bigBack[123] === 7 }));
    }`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").pop()!), { ok: true, sum: 42, bigOk: true });
});

test("a task's exception reaches get() as TaskError with the remote stack, and the job fails", async () => {
  const r = await c.submit(`
    import { remote, get, TaskError } from "tray";
    const boom = remote(function boom() { throw new RangeError("too far"); });
    export default async function main() {
      try { await get(boom.remote()); } catch (e: any) {
        console.log(JSON.stringify({ name: e.name, inst: e instanceof TaskError, causeName: e.causeName, msg: e.message, stack: /RangeError: too far/.test(e.stack) && /boom/.test(e.stack) }));
      }
      await get(boom.remote());
    }`);
  assert.equal(r.code, 1);
  assert.deepEqual(JSON.parse(r.stdout.trim().split("\n")[0]!), { name: "TaskError", inst: true, causeName: "RangeError", msg: "too far", stack: true });
  assert.match(r.stderr, /FAILED/);
  assert.match(r.stderr, /too far/);
});

test("actors keep state, run methods in order, and named actors are found with getActor", async () => {
  const r = await c.submit(`
    import { remote, get, getActor, kill, ActorDiedError } from "tray";
    const Counter = remote(class Counter {
      n = 0;
      inc(by = 1) { return (this.n += by); }
      async slowInc() { await new Promise(r => setTimeout(r, 5)); return ++this.n; }
    });
    export default async function main() {
      const a = Counter.options({ name: "ctr" }).remote();
      const refs = [];
      for (let i = 0; i < 50; i++) refs.push(a.inc.remote());
      const vals = await get(refs);
      const again = await getActor("ctr");
      const v = await get(again.inc.remote(100));
      const s = await get(a.slowInc.remote());
      kill(a);
      let died = "";
      try { await get(a.inc.remote()); } catch (e: any) { died = e.name; }
      console.log(JSON.stringify({ ordered: vals.every((v, i) => v === i + 1), v, s, died }));
    }`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").pop()!), { ordered: true, v: 150, s: 151, died: "ActorDiedError" });
});

test("wait, get timeout, generators and nested tasks", async () => {
  const r = await c.submit(`
    import { remote, get, wait, GetTimeoutError } from "tray";
    const sleep = remote(async (ms: number) => { await new Promise(r => setTimeout(r, ms)); return ms; });
    const gen = remote(async function* count(n: number) { for (let i = 0; i < n; i++) yield i * 10; });
    const fib = remote(async (n: number): Promise<number> => {
      if (n < 2) return n;
      return (await get(fib.remote(n - 1))) + (await get(fib.remote(n - 2)));
    });
    export default async function main() {
      const refs = [sleep.remote(2000), sleep.remote(10)];
      const [ready, notReady] = await wait(refs, { numReturns: 1 });
      let timeout = "";
      try { await get(refs[0], { timeoutMs: 50 }); } catch (e: any) { timeout = e.name; }
      const items = [];
      for await (const ref of gen.remote(4)) items.push(await get(ref));
      const f = await get(fib.remote(7));
      console.log(JSON.stringify({ ready: ready.length === 1 && ready[0] === refs[1], notReady: notReady.length, timeout, items, f }));
    }`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").pop()!), { ready: true, notReady: 1, timeout: "GetTimeoutError", items: [0, 10, 20, 30], f: 13 });
});
