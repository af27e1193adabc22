// Worker faults: a task that exits, crashes natively (SIGSEGV), runs out of memory or is
// killed from outside fails only itself, is retried per maxRetries, and the pool replaces the
// worker; retryExceptions retries user exceptions.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

const c = new TestCluster("faults");
before(async () => {
  // A small V8 heap, so that the out-of-memory test dies in a fraction of a second.
  const r = await c.cli(["up", c.configPath], { env: { TRAY_WORKER_MAX_OLD_SPACE_MB: "64" } });
  assert.equal(r.code, 0, r.stderr);
});
after(() => c.down());

test("process.exit(3), a native crash and running out of memory each fail only their task (maxRetries: 0)", async () => {
  const r = await c.submit(`
    import { remote, get, WorkerCrashedError, OutOfMemoryError } from "tray";
    const exit3 = remote(function exit3() { process.exit(3); }, { maxRetries: 0 });
    const segv = remote(function segv() { process.kill(process.pid, "SIGSEGV"); return "survived"; }, { maxRetries: 0 });
    const hog = remote(function hog() { const keep: number[][] = []; for (;;) keep.push(new Array(1_000_000).fill(1.5)); }, { maxRetries: 0 });
    const sq = remote((x: number) => x * x);
    export default async function main() {
      const bad = [exit3.remote(), segv.remote(), hog.remote()];
      const good = Array.from({ length: 20 }, (_, i) => sq.remote(i));
      const out: any[] = [];
      for (const ref of bad) {
        try { await get(ref); out.push("no error"); }
        catch (e: any) { out.push({ name: e.name, message: e.message, crashed: e instanceof WorkerCrashedError, oom: e instanceof OutOfMemoryError }); }
      }
      const squares = await get(good);
      const later = await get(sq.remote(12));
      console.log(JSON.stringify({ out, squares, later }));
    }`);
  const o = okJson(r);
  const [exit, segv, oom] = o.out;
  assert.equal(exit.name, "WorkerCrashedError");
  assert.equal(exit.crashed, true);
  assert.match(exit.message, /the worker running exit3 \(pid \d+\) exited with code 3/);
  assert.equal(segv.name, "WorkerCrashedError");
  assert.match(segv.message, /the worker running segv \(pid \d+\) was killed by SIGSEGV/);
  assert.equal(oom.name, "OutOfMemoryError", JSON.stringify(oom));
  assert.equal(oom.oom, true);
  assert.match(oom.message, /hog .* ran out of memory/);
  assert.deepEqual(o.squares, Array.from({ length: 20 }, (_, i) => i * i), "tasks beside the crashing ones all succeed");
  assert.equal(o.later, 144, "the pool replaced the dead workers");
});

test("a task that exits, crashes or runs out of memory only the first time succeeds with maxRetries: 2", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    import fs from "node:fs";
    const flaky = remote((marker: string, how: string) => {
      fs.appendFileSync(marker, "x");
      if (fs.readFileSync(marker, "utf8").length === 1) {
        if (how === "exit") process.exit(1);
        if (how === "oom") { const keep: number[][] = []; for (;;) keep.push(new Array(1_000_000).fill(1.5)); }
        process.kill(process.pid, "SIGSEGV");
      }
      return "ok after " + fs.readFileSync(marker, "utf8").length + " attempts";
    }, { maxRetries: 2 });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-flaky-");
      console.log(JSON.stringify(await get([flaky.remote(dir + "/a", "exit"), flaky.remote(dir + "/b", "segv"), flaky.remote(dir + "/c", "oom")])));
    }`);
  assert.deepEqual(okJson(r), ["ok after 2 attempts", "ok after 2 attempts", "ok after 2 attempts"]);
});

test("the default is 3 retries: a task that always crashes runs 4 times, then fails", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    import fs from "node:fs";
    const always = remote(function always(marker: string) { fs.appendFileSync(marker, "x"); process.exit(7); });
    export default async function main() {
      const marker = fs.mkdtempSync("/tmp/tray-always-") + "/m";
      let err: any;
      try { await get(always.remote(marker)); } catch (e: any) { err = { name: e.name, message: e.message }; }
      console.log(JSON.stringify({ err, attempts: fs.readFileSync(marker, "utf8").length }));
    }`);
  const o = okJson(r);
  assert.equal(o.attempts, 4);
  assert.equal(o.err.name, "WorkerCrashedError");
  assert.match(o.err.message, /exited with code 7/);
});

test("a worker killed from outside mid-task: the task fails with WorkerCrashedError (or is retried)", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    import fs from "node:fs";
    const slow = remote(async (pidFile: string) => {
      const first = !fs.existsSync(pidFile);
      fs.writeFileSync(pidFile, String(process.pid));
      if (first) await new Promise((r) => setTimeout(r, 60_000));
      return "retried in pid " + process.pid;
    });
    // The file exists (empty) a moment before the pid is in it, and process.kill(0) would kill
    // this driver's whole process group (the head agent with it): wait for a real pid.
    async function pidOf(file: string) {
      for (;;) {
        const pid = fs.existsSync(file) ? Number(fs.readFileSync(file, "utf8")) : 0;
        if (Number.isInteger(pid) && pid > 0) return pid;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-kill-");
      const noRetry = slow.options({ maxRetries: 0 }).remote(dir + "/a");
      const pidA = await pidOf(dir + "/a");
      process.kill(pidA, "SIGKILL");
      let err: any;
      try { await get(noRetry); } catch (e: any) { err = { name: e.name, message: e.message }; }
      const withRetry = slow.options({ maxRetries: 1 }).remote(dir + "/b");
      const pidB = await pidOf(dir + "/b");
      process.kill(pidB, "SIGKILL");
      const retried = await get(withRetry);
      console.log(JSON.stringify({ err, pidA, retried, pidB }));
    }`);
  const o = okJson(r);
  assert.equal(o.err.name, "WorkerCrashedError");
  assert.match(o.err.message, new RegExp(`\\(pid ${o.pidA}\\) was killed by SIGKILL`));
  assert.match(o.retried, /^retried in pid \d+$/);
  assert.notEqual(o.retried, `retried in pid ${o.pidB}`, "the retry ran in a new worker");
});

test("retryExceptions retries a task's own exceptions; without it they fail at once", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    import fs from "node:fs";
    const shaky = remote(function shaky(marker: string) {
      fs.appendFileSync(marker, "x");
      const n = fs.readFileSync(marker, "utf8").length;
      if (n < 3) throw new Error("transient failure " + n);
      return n;
    });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-exc-");
      const retried = await get(shaky.options({ maxRetries: 2, retryExceptions: true }).remote(dir + "/a"));
      let plain: any;
      try { await get(shaky.options({ maxRetries: 2 }).remote(dir + "/b")); } catch (e: any) { plain = { name: e.name, message: e.message }; }
      let exhausted: any;
      try { await get(shaky.options({ maxRetries: 1, retryExceptions: true }).remote(dir + "/c")); } catch (e: any) { exhausted = { name: e.name, message: e.message }; }
      const attempts = (f: string) => fs.readFileSync(dir + "/" + f, "utf8").length;
      console.log(JSON.stringify({ retried, plain, exhausted, attempts: [attempts("a"), attempts("b"), attempts("c")] }));
    }`);
  const o = okJson(r);
  assert.equal(o.retried, 3);
  assert.deepEqual(o.plain, { name: "TaskError", message: "transient failure 1" });
  assert.deepEqual(o.exhausted, { name: "TaskError", message: "transient failure 2" });
  assert.deepEqual(o.attempts, [3, 1, 2]);
});

test("after all those crashes the node is healthy: resources are all back and workers are pre-started", async () => {
  const r = await c.cli(["status", "--json"]);
  const node = JSON.parse(r.stdout).nodes[0];
  assert.equal(node.available.CPU, 2, "no CPU leaked by crashed workers");
  assert.ok(node.workers >= 1, "the pool keeps workers");
  const j = await c.submit(`
    import { remote, get } from "tray";
    const f = remote((x: number) => x + 1);
    export default async function main() { console.log(JSON.stringify(await get(Array.from({ length: 50 }, (_, i) => f.remote(i))))); }`);
  assert.deepEqual(okJson(j), Array.from({ length: 50 }, (_, i) => i + 1));
});
