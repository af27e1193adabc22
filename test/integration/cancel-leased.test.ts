// cancel() of tasks that ran on a leased worker (the direct path, SPREAD leases on other nodes):
// recursive cancel reaches the tasks they submitted — on the agent's path, on their own leased
// workers, forwarded to or leased on other nodes — so queued ones never start and running ones
// are killed (force) or reported cancelled (no force); a forced cancel of a SPREAD task
// running on another node's leased worker kills that worker at once, even in synchronous code.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { localClusterYaml, TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

process.env.TRAY_HEARTBEAT_MS = "200";
process.env.TRAY_NODE_TIMEOUT_MS = "3000";

// The head, and a node "far" whose custom resource only it has: a SPREAD task asking for it
// can only be leased there, from a driver on the head.
const c = new TestCluster("cancellease", localClusterYaml("cancellease", { head: { CPU: 4 }, workers: { far: { resources: { CPU: 4, far: 1 }, count: 1 } } }));
before(() => c.up());
after(() => c.down());

const COMMON = `
  import fs from "node:fs";
  import { remote, get, cancel, getRuntimeContext } from "tray";
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  async function until(file: string, ms = 30000) {
    const deadline = Date.now() + ms;
    while (!fs.existsSync(file) && Date.now() < deadline) await sleep(10);
    return fs.existsSync(file);
  }
  function dead(pid: number) {
    try { process.kill(pid, 0); } catch { return true; }
    try { return /^\\d+ \\(.*\\) Z/.test(fs.readFileSync("/proc/" + pid + "/stat", "utf8")); } catch { return true; }
  }
  async function waitDead(pid: number, ms = 10000) {
    const deadline = Date.now() + ms;
    while (!dead(pid) && Date.now() < deadline) await sleep(10);
    return dead(pid);
  }
  async function errName(p: Promise<unknown>) { try { await p; return "resolved"; } catch (e: any) { return e.name + ": " + e.message; } }
  const listed = (dir: string, prefix: string) => fs.readdirSync(dir).filter((f) => f.startsWith(prefix)).sort();
  /** The children that started, once no new one has started for two seconds. */
  async function settled(dir: string) {
    let last = "", since = Date.now();
    while (Date.now() - since < 2000) {
      const now = listed(dir, "started-").join(",");
      if (now !== last) { last = now; since = Date.now(); }
      await sleep(50);
    }
    return listed(dir, "started-");
  }

  const ping = remote((x: number) => x);
  // A child: says it started, waits for the release, says it finished its work.
  const child = remote(async function child(dir: string, name: string) {
    fs.writeFileSync(dir + "/started-" + name, JSON.stringify({ pid: process.pid, node: getRuntimeContext().nodeId }));
    await until(dir + "/release", 20000);
    fs.writeFileSync(dir + "/finished-" + name, getRuntimeContext().nodeId);
    return name;
  });
  const spreadChild = child.options({ schedulingStrategy: "SPREAD" });
  // The parent: SPREAD children first (this process leases workers for them on every node),
  // then a lease of its own for the plain children's shape (so its first plain child goes
  // straight to a worker leased by this one), then plain children, more than the cluster's
  // CPUs hold, then more SPREAD children (they wait in this process for a free lease); it
  // records how each child ended.
  const parent = remote(async function parent(dir: string, plain: number, spreadFirst: number, spreadLast: number) {
    const kids = Array.from({ length: spreadFirst }, (_, i) => spreadChild.remote(dir, "s" + i));
    if (spreadFirst) await sleep(500);
    for (let j = 0; j < 10; j++) await get(ping.remote(j));
    kids.push(...Array.from({ length: plain }, (_, i) => child.remote(dir, "p" + i)));
    kids.push(...Array.from({ length: spreadLast }, (_, i) => spreadChild.remote(dir, "q" + i)));
    fs.writeFileSync(dir + "/parent", JSON.stringify({ pid: process.pid, node: getRuntimeContext().nodeId }));
    const out: string[] = [];
    for (const k of kids) {
      try { await get(k); out.push("ok"); } catch (e: any) { out.push(e.name); }
    }
    fs.writeFileSync(dir + "/outcomes", JSON.stringify(out));
    return out;
  });
  const farParent = parent.options({ schedulingStrategy: "SPREAD", resources: { far: 1 } });

  /** Submit the parent, cancel it once its children are placed, report what happened to them. */
  async function run(dir: string, p: () => any, n: number, force: boolean) {
    const ref = p();
    await until(dir + "/parent");
    const atCancel = await settled(dir);
    const where = atCancel.map((f) => JSON.parse(fs.readFileSync(dir + "/" + f, "utf8")));
    const t0 = Date.now();
    cancel(ref, { force });
    let err: string;
    if (force) {
      err = await errName(get(ref));
    } else {
      await sleep(500); // the cancel reaches every child before they are let go
      fs.writeFileSync(dir + "/release", "");
      err = await errName(get(ref));
    }
    const ms = Date.now() - t0;
    const killed = force ? (await Promise.all(where.map((w) => waitDead(w.pid)))).every(Boolean) : undefined;
    fs.writeFileSync(dir + "/release", "");
    await sleep(1500); // a child that was not cancelled would start or finish meanwhile
    const outcomes = force ? undefined : JSON.parse(fs.readFileSync(dir + "/outcomes", "utf8"));
    const o = {
      err, ms, n, killed, outcomes,
      parentNode: JSON.parse(fs.readFileSync(dir + "/parent", "utf8")).node,
      atCancel, childNodes: [...new Set(where.map((w) => w.node))], startedAfter: listed(dir, "started-").filter((f) => !atCancel.includes(f)),
      finished: listed(dir, "finished-"),
    };
    fs.rmSync(dir, { recursive: true, force: true });
    return o;
  }`;

test("a task on a leased worker of this node, cancelled with force: its running children are killed, its queued ones never start", async () => {
  const r = await c.submit(`
    ${COMMON}
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-leased-");
      // A lease of the driver's own: the parent goes straight to that worker.
      for (let j = 0; j < 20; j++) await get(ping.remote(j));
      console.log(JSON.stringify({ ...(await run(dir, () => parent.remote(dir, 12, 0, 0), 12, true)), head: getRuntimeContext().nodeId }));
    }`);
  const o = okJson(r);
  assert.match(o.err, /^TaskCancelledError: parent/);
  assert.equal(o.parentNode, o.head);
  assert.ok(o.ms < 5000, `cancelled in ${o.ms} ms`);
  assert.ok(o.atCancel.length >= 3 && o.atCancel.length < o.n, `some children ran and some waited when it was cancelled: ${JSON.stringify(o)}`);
  assert.equal(o.killed, true, "the workers of the running children were killed");
  assert.deepEqual(o.startedAfter, [], "no queued child started");
  assert.deepEqual(o.finished, [], "no child finished its work");
});

test("a task on a leased worker of this node, cancelled without force: its queued children never start, its running ones are reported cancelled", async () => {
  const r = await c.submit(`
    ${COMMON}
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-leased-");
      for (let j = 0; j < 20; j++) await get(ping.remote(j));
      console.log(JSON.stringify(await run(dir, () => parent.remote(dir, 12, 0, 0), 12, false)));
    }`);
  const o = okJson(r);
  assert.match(o.err, /^TaskCancelledError: parent/);
  assert.ok(o.atCancel.length >= 3 && o.atCancel.length < o.n, JSON.stringify(o));
  assert.deepEqual(o.startedAfter, [], "no queued child started");
  assert.deepEqual(o.outcomes, Array(o.n).fill("TaskCancelledError"), "every child's result is TaskCancelledError");
});

test("a SPREAD task on a worker leased on another node, cancelled with force: its children (there, on its own leases, on other nodes) are killed or never start", async () => {
  const r = await c.submit(`
    ${COMMON}
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-leased-");
      console.log(JSON.stringify({ ...(await run(dir, () => farParent.remote(dir, 8, 3, 2), 13, true)), head: getRuntimeContext().nodeId }));
    }`);
  const o = okJson(r);
  assert.match(o.err, /^TaskCancelledError: parent/);
  assert.notEqual(o.parentNode, o.head, "the parent ran on the other node");
  assert.equal(o.childNodes.length, 2, `its children ran on both nodes: ${JSON.stringify(o)}`);
  assert.ok(o.ms < 5000, `cancelled in ${o.ms} ms`);
  assert.ok(o.atCancel.length >= 3 && o.atCancel.length < o.n, JSON.stringify(o));
  assert.equal(o.killed, true, "the workers of the running children were killed");
  assert.deepEqual(o.startedAfter, [], "no queued child started");
  assert.deepEqual(o.finished, [], "no child finished its work");
});

test("a SPREAD task on a worker leased on another node, cancelled without force: its queued children never start, its running ones are reported cancelled", async () => {
  const r = await c.submit(`
    ${COMMON}
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-leased-");
      console.log(JSON.stringify({ ...(await run(dir, () => farParent.remote(dir, 8, 3, 2), 13, false)), head: getRuntimeContext().nodeId }));
    }`);
  const o = okJson(r);
  assert.match(o.err, /^TaskCancelledError: parent/);
  assert.notEqual(o.parentNode, o.head);
  assert.equal(o.childNodes.length, 2, JSON.stringify(o));
  assert.ok(o.atCancel.length >= 3 && o.atCancel.length < o.n, JSON.stringify(o));
  assert.deepEqual(o.startedAfter, [], "no queued child started");
  assert.deepEqual(o.outcomes, Array(o.n).fill("TaskCancelledError"), "every child's result is TaskCancelledError");
});

test("a SPREAD task busy in synchronous code on another node's leased worker, cancelled with force: killed within moments", async () => {
  const r = await c.submit(`
    ${COMMON}
    const spin = remote(function spin(dir: string) {
      fs.writeFileSync(dir + "/pid", JSON.stringify({ pid: process.pid, node: getRuntimeContext().nodeId }));
      const end = Date.now() + 20000;
      while (Date.now() < end && !fs.existsSync(dir + "/stop")) {}
      return "finished";
    }, { schedulingStrategy: "SPREAD", resources: { far: 1 } });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-cancel-leased-");
      const ref = spin.remote(dir);
      await until(dir + "/pid");
      const { pid, node } = JSON.parse(fs.readFileSync(dir + "/pid", "utf8"));
      const t0 = Date.now();
      cancel(ref, { force: true });
      const err = await errName(get(ref));
      const ms = Date.now() - t0;
      const killed = await waitDead(pid, 5000);
      fs.writeFileSync(dir + "/stop", "");
      await sleep(100);
      fs.rmSync(dir, { recursive: true, force: true });
      console.log(JSON.stringify({ err, ms, killed, far: node !== getRuntimeContext().nodeId }));
    }`);
  const o = okJson(r);
  assert.equal(o.far, true, "it ran on the other node");
  assert.match(o.err, /^TaskCancelledError: spin/);
  assert.ok(o.ms < 5000, `TaskCancelledError after ${o.ms} ms (the task would run 20 s)`);
  assert.equal(o.killed, true, "its worker was killed");
});
