// cancel(): a pending task (queued behind busy CPUs or waiting on a dependency) never runs and
// rejects with TaskCancelledError; a running task cancelled with force is killed (its worker
// replaced); without force it is marked and rejects once it returns; recursive cancels children.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

const c = new TestCluster("cancel");
before(() => c.up());
after(() => c.down());

const COMMON = `
  import fs from "node:fs";
  async function until(file: string, ms = 30000) {
    const deadline = Date.now() + ms;
    while (!fs.existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return fs.existsSync(file);
  }
  // A pid a task wrote: the file exists (empty) a moment before the pid is in it.
  async function pidIn(file: string) {
    for (;;) {
      const pid = fs.existsSync(file) ? Number(fs.readFileSync(file, "utf8")) : 0;
      if (Number.isInteger(pid) && pid > 0) return pid;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  // Gone, or a zombie its parent has not reaped yet (it runs nothing either way).
  function dead(pid: number) {
    try { process.kill(pid, 0); } catch { return true; }
    try { return /^\d+ \(.*\) Z/.test(fs.readFileSync("/proc/" + pid + "/stat", "utf8")); } catch { return true; }
  }
  async function waitDead(pid: number, ms = 10000) {
    const deadline = Date.now() + ms;
    while (!dead(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return dead(pid);
  }
  async function errName(p: Promise<unknown>) { try { await p; return "resolved"; } catch (e: any) { return e.name + ": " + e.message; } }`;

test("a task queued behind busy CPUs is cancelled before it runs", async () => {
  const r = await c.submit(`
    import { remote, get, cancel, getRuntimeContext } from "tray";
    ${COMMON}
    const busy = remote(async function busy(dir: string, me: string) { fs.writeFileSync(dir + "/started-" + me, ""); await until(dir + "/go"); return me; });
    const later = remote(function later(dir: string) { fs.writeFileSync(dir + "/later-ran", ""); return "ran"; });
    const waiter = remote(function waiter(x: string, dir: string) { fs.writeFileSync(dir + "/waiter-ran", ""); return x; });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-");
      const a = busy.remote(dir, "a"), b = busy.remote(dir, "b");
      await until(dir + "/started-a"); await until(dir + "/started-b");
      const queued = later.remote(dir);
      const dependent = waiter.remote(a, dir);
      cancel(queued);
      cancel(dependent);
      const queuedErr = await errName(get(queued));
      const dependentErr = await errName(get(dependent));
      fs.writeFileSync(dir + "/go", "");
      const done = await get([a, b]);
      await new Promise((r) => setTimeout(r, 200));
      console.log(JSON.stringify({ queuedErr, dependentErr, done, laterRan: fs.existsSync(dir + "/later-ran"), waiterRan: fs.existsSync(dir + "/waiter-ran") }));
    }`);
  const o = okJson(r);
  assert.match(o.queuedErr, /^TaskCancelledError: later \(.*\) was cancelled$/);
  assert.match(o.dependentErr, /^TaskCancelledError: waiter/);
  assert.deepEqual(o.done, ["a", "b"], "the running tasks were not disturbed");
  assert.equal(o.laterRan, false);
  assert.equal(o.waiterRan, false);
});

test("a running async task cancelled with force: TaskCancelledError, its worker is killed and replaced", async () => {
  const r = await c.submit(`
    import { remote, get, cancel } from "tray";
    ${COMMON}
    const forever = remote(async function forever(dir: string) { fs.writeFileSync(dir + "/pid", String(process.pid)); await new Promise((r) => setTimeout(r, 60_000)); return "finished"; });
    const sq = remote((x: number) => x * x);
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-");
      const ref = forever.remote(dir);
      const pid = await pidIn(dir + "/pid");
      const t0 = Date.now();
      cancel(ref, { force: true });
      const err = await errName(get(ref));
      const gone = await waitDead(pid);
      const after = await get(Array.from({ length: 10 }, (_, i) => sq.remote(i)));
      console.log(JSON.stringify({ err, dead: gone, after, quick: Date.now() - t0 < 30_000 }));
    }`);
  const o = okJson(r);
  assert.match(o.err, /^TaskCancelledError: forever/);
  assert.equal(o.dead, true, "the worker process was killed");
  assert.deepEqual(o.after, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81], "new workers run later tasks");
  assert.equal(o.quick, true, "get did not wait for the task's 60 s");
});

test("cancel without force marks a running task: it rejects with TaskCancelledError once it returns; cancelling a finished task changes nothing", async () => {
  const r = await c.submit(`
    import { remote, get, cancel } from "tray";
    ${COMMON}
    const step = remote(async function step(dir: string) { fs.writeFileSync(dir + "/started", ""); await until(dir + "/go"); return "done"; });
    const quick = remote(() => 42);
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-");
      const ref = step.remote(dir);
      await until(dir + "/started");
      cancel(ref);
      // The cancel travels to the worker while the task polls for "go" every 10 ms: released at
      // once, the task could return before the cancel arrived (a finished task is not
      // cancelled), which failed this test about one run in five.
      await new Promise((r) => setTimeout(r, 100));
      fs.writeFileSync(dir + "/go", "");
      const err = await errName(get(ref));
      const q = quick.remote();
      const v = await get(q);
      cancel(q);
      console.log(JSON.stringify({ err, v, again: await get(q) }));
    }`);
  const o = okJson(r);
  assert.match(o.err, /^TaskCancelledError: step/);
  assert.equal(o.v, 42);
  assert.equal(o.again, 42);
});

test("cancelling a task cancels the tasks it submitted (recursive, the default)", async () => {
  const r = await c.submit(`
    import { remote, get, cancel } from "tray";
    ${COMMON}
    const child = remote(async function child(dir: string) { fs.writeFileSync(dir + "/child-started", String(process.pid)); await new Promise((r) => setTimeout(r, 60_000)); return "child"; }, { numCpus: 0.5 });
    const parent = remote(async function parent(dir: string) { const ref = child.remote(dir); fs.writeFileSync(dir + "/child-id", (ref as any).id); return get(ref); }, { numCpus: 0.5 });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-");
      const p = parent.remote(dir);
      const childPid = await pidIn(dir + "/child-started");
      cancel(p, { force: true });
      const err = await errName(get(p));
      const childKilled = await waitDead(childPid);
      console.log(JSON.stringify({ err, childKilled }));
    }`);
  const o = okJson(r);
  assert.match(o.err, /^TaskCancelledError: parent/);
  assert.equal(o.childKilled, true, "the child task's worker was killed with its parent");
  // Nothing of that job is left running: all CPUs are free again.
  const s = JSON.parse((await c.cli(["status", "--json"])).stdout).nodes[0];
  assert.equal(s.available.CPU, 2, JSON.stringify(s));
});

test("cancelling tasks already handed to a busy worker (pipelined behind a long one) settles them and frees the worker", async () => {
  const r = await c.submit(`
    import { remote, get, cancel, availableResources } from "tray";
    ${COMMON}
    const f = remote(async function f(x: number, dir: string) {
      if (x === 0) { fs.writeFileSync(dir + "/blocking", ""); await until(dir + "/go", 10_000); }
      else { const t = Date.now(); while (Date.now() - t < 1) {} }
      return x;
    }, { schedulingStrategy: "DEFAULT" });
    export default async function main() {
      // (a strategy named, even DEFAULT, keeps tasks on the agent's path, which this test is
      // about; submitters know f is short after its first burst and would otherwise keep the
      // tasks themselves: cancel-leased.test.ts covers cancelling those)
      const dir = fs.mkdtempSync("/tmp/tray-cancel-");
      // Tiny tasks: the scheduler learns they are short and hands workers several at a time,
      // so some of the tasks below wait inside the worker that runs f(0).
      await get(Array.from({ length: 300 }, (_, i) => f.remote(i + 1, dir)));
      const refs = [f.remote(0, dir), ...Array.from({ length: 60 }, (_, i) => f.remote(i + 1, dir))];
      await until(dir + "/blocking");
      await new Promise((r) => setTimeout(r, 300));
      for (const ref of refs.slice(1)) cancel(ref);
      fs.writeFileSync(dir + "/go", "");
      const results = await Promise.all(refs.map((ref) => get(ref, { timeoutMs: 10_000 }).then((v) => v, (e: any) => e.name)));
      await new Promise((r) => setTimeout(r, 300));
      console.log(JSON.stringify({ results, cpu: (await availableResources()).CPU }));
    }`);
  const o = okJson(r);
  assert.equal(o.results[0], 0);
  assert.ok(!o.results.includes("GetTimeoutError"), `every cancelled task settles: ${JSON.stringify(o.results)}`);
  assert.ok(o.results.includes("TaskCancelledError"), `the tasks queued in the busy worker were cancelled: ${JSON.stringify(o.results)}`);
  assert.equal(o.cpu, 2, "every worker's lease was released");
});
