// The direct path for tiny tasks and actor calls (src/runtime/direct-tasks.ts): results owned
// by their submitter until a ref leaves the process, primitives carried as themselves, the
// submitter-side backlog over leased workers. Real agent, real workers, through the CLI.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

const c = new TestCluster("direct");
before(() => c.up());
after(() => c.down());

test("results of direct tasks and actor calls, and small puts, stay in their owner: the agent tracks none of them", async () => {
  const r = await c.submit(`
    import { remote, get, put, nodes } from "tray";
    const noop = remote((x: number) => x);
    const A = remote(class A { ping(x: number) { return x; } });
    export default async function main() {
      const a = A.remote();
      await get(a.ping.remote(0));
      for (let i = 0; i < 50; i++) await get(noop.remote(i)); // a lease, and the class measured
      const before = (await nodes())[0].store.objects;
      const kept = [];
      for (let i = 0; i < 2000; i++) kept.push(noop.remote(i), a.ping.remote(i), put(i), put({ i }));
      const values = await get(kept);
      const after = (await nodes())[0].store.objects;
      const sum = values.reduce((s: number, v: any) => s + (typeof v === "number" ? v : v.i), 0);
      console.log(JSON.stringify({ before, after, sum, n: kept.length }));
    }`);
  const j = okJson(r);
  assert.equal(j.n, 8000);
  assert.equal(j.sum, 4 * ((2000 * 1999) / 2));
  // 8,000 results and small puts held by the job: the agent's directory did not grow by one each.
  assert.ok(j.after - j.before < 100, `the agent tracked ${j.after - j.before} new objects for 8,000 owned objects`);
});

test("an owned object (direct result, small put) that leaves its owner is announced first: as an argument, nested in a value, in put(), returned by a task", async () => {
  const r = await c.submit(`
    import { remote, get, put } from "tray";
    const noop = remote((x: unknown) => x);
    const double = remote((x: number) => x * 2);
    const sumNested = remote(async (o: { refs: any[] }) => (await get(o.refs)).reduce((a: number, b: number) => a + b, 0));
    const makeRefs = remote(() => [noop.remote(5), noop.remote(6)]);
    const A = remote(class A { twice(x: number) { return 2 * x; } });
    export default async function main() {
      for (let i = 0; i < 20; i++) await get(noop.remote(i));
      const done = noop.remote(21);
      await get(done);                       // settled before it leaves
      const pending = noop.remote(22);       // still in flight when it leaves
      const a = A.remote();
      const viaArg = await get(double.remote(done));
      const viaPending = await get(double.remote(pending));
      const viaNested = await get(sumNested.remote({ refs: [done, noop.remote(1)] }));
      const viaPut = await get(sumNested.remote(await get(put({ refs: [done, pending] }))));
      const viaActor = await get(a.twice.remote(done));
      const inner = await get(makeRefs.remote());
      const fromTask = await get(inner);
      const seven = put(7), obj = put({ n: 8 });
      const putArg = await get(double.remote(seven));
      const putNested = await get(sumNested.remote({ refs: [seven, noop.remote(1)] }));
      const putObj = await get(noop.remote(obj));
      console.log(JSON.stringify({ viaArg, viaPending, viaNested, viaPut, viaActor, fromTask, putArg, putNested, putObj }));
    }`);
  assert.deepEqual(okJson(r), { viaArg: 42, viaPending: 44, viaNested: 22, viaPut: 43, viaActor: 42, fromTask: [5, 6], putArg: 14, putNested: 8, putObj: { n: 8 } });
});

test("values keep their exact type and value on the direct path (primitives travel as themselves)", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const echo = remote((x: unknown) => x);
    const kind = remote((x: unknown) => Object.is(x, -0) ? "-0" : x === undefined ? "undefined" : typeof x);
    const A = remote(class A { echo(x: unknown) { return x; } nothing() {} });
    export default async function main() {
      for (let i = 0; i < 20; i++) await get(echo.remote(i));
      const a = A.remote();
      const vals: unknown[] = [0, -1, 2 ** 40, 1.5, NaN, Infinity, "", "s".repeat(5000), true, false, null, undefined, -0, 10n, [1, "a"]];
      const back = await get(vals.map((v) => echo.remote(v)));
      const backA = await get(vals.map((v) => a.echo.remote(v)));
      const same = (x: unknown, y: unknown) => typeof x === "bigint" || Array.isArray(x) ? JSON.stringify(x, (_, v) => typeof v === "bigint" ? "n" + v : v) === JSON.stringify(y, (_, v) => typeof v === "bigint" ? "n" + v : v) : Object.is(x, y);
      const kinds = await get([echo.remote(-0), kind.remote(-0), kind.remote(undefined), a.nothing.remote()]);
      console.log(JSON.stringify({
        tasks: vals.map((v, i) => same(v, back[i])),
        actor: vals.map((v, i) => same(v, backA[i])),
        minusZero: Object.is(kinds[0], -0), argKind: kinds[1], undefKind: kinds[2], nothing: kinds[3] === undefined,
      }));
    }`);
  const j = okJson(r);
  assert.ok(j.tasks.every(Boolean), `task values changed: ${JSON.stringify(j.tasks)}`);
  assert.ok(j.actor.every(Boolean), `actor values changed: ${JSON.stringify(j.actor)}`);
  assert.deepEqual([j.minusZero, j.argKind, j.undefKind, j.nothing], [true, "-0", "undefined", true]);
});

test("a burst of tiny tasks waits in the submitter and drains over leased workers; one still waiting can be cancelled", async () => {
  const r = await c.submit(`
    import { remote, get, cancel, TaskCancelledError } from "tray";
    const noop = remote((x: number) => x);
    export default async function main() {
      for (let i = 0; i < 50; i++) await get(noop.remote(i));
      const refs = Array.from({ length: 20000 }, (_, i) => noop.remote(i));
      const victim = refs[19999];
      cancel(victim);
      let cancelled = false;
      try { await get(victim); } catch (e) { cancelled = e instanceof TaskCancelledError; }
      const values = await get(refs.slice(0, 19999));
      const ok = values.every((v: number, i: number) => v === i);
      console.log(JSON.stringify({ ok, cancelled }));
    }`);
  assert.deepEqual(okJson(r), { ok: true, cancelled: true });
});

test("a burst of tiny tasks after a pause (the last lease went back) waits in the submitter for a new lease, not in the agent", async () => {
  // Sent to the agent while the first lease was being asked for, the burst filled the agent's
  // queue, and a node with a queue grants no lease: every burst after a pause ran through the
  // agent at a third of the speed.
  const r = await c.submit(`
    import { remote, get, nodes } from "tray";
    const noop = remote((x: number) => x);
    const stats = async () => (await nodes())[0].taskStats;
    export default async function main() {
      for (let i = 0; i < 50; i++) await get(noop.remote(i)); // measured: tiny
      const viaAgent: number[] = [];
      let ok = true;
      for (let round = 0; round < 3; round++) {
        await new Promise((r) => setTimeout(r, 100)); // the lease goes back after 10 ms idle
        const before = (await stats()).submitted;
        const values = await get(Array.from({ length: 2000 }, (_, i) => noop.remote(i)));
        ok &&= values.every((v: number, i: number) => v === i);
        viaAgent.push((await stats()).submitted - before);
      }
      console.log(JSON.stringify({ ok, viaAgent }));
    }`);
  const out = okJson(r);
  assert.equal(out.ok, true);
  // The first task of each burst may go through the agent (it asks for the lease); not the rest.
  for (const n of out.viaAgent) assert.ok(n <= 2, JSON.stringify(out));
});

test("a function's first burst goes through the agent and teaches the submitter its tasks are tiny: the next burst waits in it", async () => {
  // Durations used to be learned on leased workers only, so a function first called in bursts
  // (no lease free while the agent's queue was full) never took the direct path.
  const r = await c.submit(`
    import { remote, get, nodes } from "tray";
    const fresh = remote((x: number) => x + 1);
    const stats = async () => (await nodes())[0].taskStats;
    export default async function main() {
      const viaAgent: number[] = [];
      let ok = true;
      for (let round = 0; round < 3; round++) {
        const before = (await stats()).submitted;
        const values = await get(Array.from({ length: 2000 }, (_, i) => fresh.remote(i)));
        ok &&= values.every((v: number, i: number) => v === i + 1);
        viaAgent.push((await stats()).submitted - before);
        await new Promise((r) => setTimeout(r, 50)); // and the lease goes back in between
      }
      console.log(JSON.stringify({ ok, viaAgent }));
    }`);
  const out = okJson(r);
  assert.equal(out.ok, true);
  assert.ok(out.viaAgent[0] > 1000, `the first burst: duration unknown, through the agent ${JSON.stringify(out)}`);
  assert.ok(out.viaAgent[1] <= 2 && out.viaAgent[2] <= 2, JSON.stringify(out));
});

test("tasks that wait on their own subtasks, mixed with tiny ones of the same shape, never deadlock a leased worker", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const leaf = remote((x: number) => x);
    const parent = remote(async (x: number) => (await get([leaf.remote(x), leaf.remote(1)])).reduce((a: number, b: number) => a + b, 0));
    export default async function main() {
      for (let i = 0; i < 50; i++) await get(leaf.remote(i)); // tiny: deep pipelines, a backlog
      const refs = [];
      for (let i = 0; i < 300; i++) refs.push(i % 3 ? leaf.remote(i) : parent.remote(i));
      const values = await get(refs);
      const ok = values.every((v: number, i: number) => v === (i % 3 ? i : i + 1));
      console.log(JSON.stringify({ ok }));
    }`);
  assert.deepEqual(okJson(r), { ok: true });
});

test("a slow function called after a burst of tiny ones of the same shape still runs on every CPU (durations are measured per function)", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const tiny = remote((x: number) => x);
    const slow = remote(async (i: number) => { const start = Date.now(); await new Promise((r) => setTimeout(r, 400)); return { i, start, end: Date.now() }; });
    export default async function main() {
      for (let k = 0; k < 3; k++) await get(Array.from({ length: 2000 }, (_, i) => tiny.remote(i)));
      await get(slow.remote(-1)); // measured once: slow
      const runs = await get(Array.from({ length: 4 }, (_, i) => slow.remote(i)));
      // on 2 CPUs, some two of the four must have overlapped in time
      let overlap = false;
      for (const a of runs) for (const b of runs) if (a.i < b.i && a.start < b.end && b.start < a.end) overlap = true;
      console.log(JSON.stringify({ overlap }));
    }`);
  assert.deepEqual(okJson(r), { overlap: true });
});
