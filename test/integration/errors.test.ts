// Errors that reach get(): TaskError with the user's name/message/remote stack (also through
// nested tasks and failed dependencies), GetTimeoutError, ObjectLostError.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

const c = new TestCluster("errors");
before(() => c.up());
after(() => c.down());

test("TaskError keeps the original name, message, remote stack and cause, also through a nested task", async () => {
  const r = await c.submit(`
    import { remote, get, TaskError } from "tray";
    class QuotaError extends Error { override name = "QuotaError"; }
    const inner = remote(function inner() { throw new QuotaError("quota of 5 exceeded"); });
    const outer = remote(async function outer() { return get(inner.remote()); });
    const str = remote(function str() { throw "a plain string"; });
    export default async function main() {
      const out: any = {};
      for (const [k, ref] of [["direct", inner.remote()], ["nested", outer.remote()], ["string", str.remote()]] as const) {
        try { await get(ref); out[k] = "no error"; }
        catch (e: any) {
          out[k] = { name: e.name, inst: e instanceof TaskError, causeName: e.causeName, message: e.message,
            causeIsError: e.cause instanceof Error, causeMessage: e.cause?.message,
            stackNamesInner: /inner/.test(e.stack), stackHasQuota: /QuotaError: quota of 5 exceeded/.test(e.stack),
            stackNamesJobFile: /at inner \\(.*job-[a-z0-9]+\\.ts:4:\\d+\\)/.test(e.stack), noTrayFrames: !/dist\\/agent\\.js|async_hooks/.test(e.stack) };
        }
      }
      console.log(JSON.stringify(out));
    }`);
  const o = okJson(r);
  for (const k of ["direct", "nested"]) {
    assert.equal(o[k].name, "TaskError", k);
    assert.equal(o[k].inst, true, k);
    assert.equal(o[k].causeName, "QuotaError", k);
    assert.equal(o[k].message, "quota of 5 exceeded", k);
    assert.equal(o[k].causeIsError, true, k);
    assert.equal(o[k].causeMessage, "quota of 5 exceeded", k);
    assert.equal(o[k].stackNamesInner, true, `${k}: the stack shows where the user's code threw`);
    assert.equal(o[k].stackHasQuota, true, k);
    assert.equal(o[k].stackNamesJobFile, true, `${k}: the stack names the job's own file and line (source maps)`);
    assert.equal(o[k].noTrayFrames, true, `${k}: tray's own frames are left out`);
  }
  assert.equal(o.string.name, "TaskError");
  assert.equal(o.string.message, "a plain string");
});

test("a task whose argument failed does not run; its get() rejects with the argument's error", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    import fs from "node:fs";
    const fail = remote(function fail() { throw new SyntaxError("bad input"); });
    const use = remote((x: unknown, marker: string) => { fs.writeFileSync(marker, "ran"); return x; });
    export default async function main() {
      const marker = fs.mkdtempSync("/tmp/tray-dep-") + "/m";
      let err: any;
      try { await get(use.remote(fail.remote(), marker)); } catch (e: any) { err = { name: e.name, causeName: e.causeName, message: e.message }; }
      console.log(JSON.stringify({ err, ran: fs.existsSync(marker) }));
    }`);
  assert.deepEqual(okJson(r), { err: { name: "TaskError", causeName: "SyntaxError", message: "bad input" }, ran: false });
});

test("get() with timeoutMs rejects with GetTimeoutError; the task still finishes and can be got later", async () => {
  const r = await c.submit(`
    import { remote, get, wait, GetTimeoutError } from "tray";
    const slow = remote(async () => { await new Promise((r) => setTimeout(r, 700)); return "late"; });
    export default async function main() {
      const ref = slow.remote();
      let err: any;
      try { await get(ref, { timeoutMs: 100 }); } catch (e: any) { err = { name: e.name, inst: e instanceof GetTimeoutError, message: e.message }; }
      const many: any = await get([ref, slow.remote()], { timeoutMs: 50 }).catch((e) => e.name);
      const [ready, notReady] = await wait([ref], { timeoutMs: 10 });
      const value = await get(ref);
      console.log(JSON.stringify({ err, many, early: [ready.length, notReady.length], value }));
    }`);
  const o = okJson(r);
  assert.equal(o.err.name, "GetTimeoutError");
  assert.equal(o.err.inst, true);
  assert.match(o.err.message, /timed out after 100 ms waiting for 1 object/);
  assert.equal(o.many, "GetTimeoutError");
  assert.deepEqual(o.early, [0, 1]);
  assert.equal(o.value, "late");
});

test("ObjectLostError: a ref to an object that does not exist, one whose data is gone, and a task given such a ref", async () => {
  const r = await c.submit(`
    import { remote, put, get, ObjectRef, ObjectLostError } from "tray";
    import fs from "node:fs";
    import path from "node:path";
    const len = remote((b: Uint8Array) => b.length);
    export default async function main() {
      const out: any = {};
      const ghost = new (ObjectRef as any)("nosuchworker.1");
      try { await get(ghost); out.ghost = "found"; } catch (e: any) { out.ghost = { name: e.name, inst: e instanceof ObjectLostError, message: e.message }; }
      const big: any = put(new Uint8Array(500_000).fill(1));
      fs.unlinkSync(path.join(process.env.TRAY_STORE_DIR!, big.id));
      try { await get(big); out.gone = "found"; } catch (e: any) { out.gone = { name: e.name, message: e.message }; }
      try { await get(len.remote(big)); out.task = "ran"; } catch (e: any) { out.task = { name: e.name, message: e.message }; }
      console.log(JSON.stringify(out));
    }`);
  const o = okJson(r);
  assert.equal(o.ghost.name, "ObjectLostError");
  assert.equal(o.ghost.inst, true);
  assert.match(o.ghost.message, /object nosuchworker\.1 .*never created/);
  assert.equal(o.gone.name, "ObjectLostError");
  assert.match(o.gone.message, /was lost: its data .* is gone/);
  assert.equal(o.task.name, "ObjectLostError", JSON.stringify(o.task));
});

test("an anonymous function is named by where remote() was called in the job file", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const sq = remote((x: number) => { if (x > 2) throw new Error("too big"); return x * x; });
    const quit = remote(() => process.exit(4), { maxRetries: 0 });
    export default async function main() {
      const out: string[] = [];
      try { await get(sq.remote(3)); } catch (e: any) { out.push(e.stack.split("\\n")[0]); }
      try { await get(quit.remote()); } catch (e: any) { out.push(e.message); }
      console.log(JSON.stringify(out));
    }`);
  const [stack, crash] = okJson(r);
  assert.match(stack, /^TaskError: anonymous function at job-[a-z0-9]+\.ts:3 failed: Error: too big$/);
  assert.match(crash, /^the worker running anonymous function at job-[a-z0-9]+\.ts:4 \(pid \d+\) exited with code 4/);
});
