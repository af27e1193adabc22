// Actors: sync and async methods, maxConcurrency, named/detached actors across jobs,
// getIfExists, restarts after the process is killed, kill(), constructor failures, and
// actor handles passed to tasks and other actors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";
import { okJson, pidGone } from "../helpers/runtime.js";

const c = new TestCluster("actors");
before(() => c.up());
after(() => c.down());

test("sync and async methods share the actor's state; a method's exception leaves the actor alive", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const Acc = remote(class Acc {
      items: string[] = [];
      constructor(readonly prefix: string) {}
      add(x: string) { this.items.push(this.prefix + x); return this.items.length; }
      async addLater(x: string) { await new Promise((r) => setTimeout(r, 10)); return this.add(x); }
      fail() { throw new TypeError("not today"); }
      all() { return this.items; }
    });
    export default async function main() {
      const a = Acc.remote("p-");
      await get([a.add.remote("a"), a.addLater.remote("b"), a.add.remote("c")]);
      let err: any;
      try { await get(a.fail.remote()); } catch (e: any) { err = { name: e.name, causeName: e.causeName, message: e.message }; }
      console.log(JSON.stringify({ all: await get(a.all.remote()), err }));
    }`);
  assert.deepEqual(okJson(r), {
    all: ["p-a", "p-b", "p-c"],
    err: { name: "TaskError", causeName: "TypeError", message: "not today" },
  });
});

test("async methods overlap up to maxConcurrency; with the default of 1 they run one at a time", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const Gate = remote(class Gate {
      running = 0; max = 0;
      // Waits until \`want\` calls run together (or 3 s pass), so overlap is certain when allowed.
      async work(want: number) {
        this.running++;
        this.max = Math.max(this.max, this.running);
        const deadline = Date.now() + 3000;
        while (this.running < want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        await new Promise((r) => setTimeout(r, 20));
        this.running--;
      }
      peak() { return this.max; }
    });
    export default async function main() {
      const three = Gate.options({ maxConcurrency: 3 }).remote();
      await get(Array.from({ length: 9 }, () => three.work.remote(3)));
      const one = Gate.remote();
      await get(Array.from({ length: 4 }, () => one.work.remote(1)));
      console.log(JSON.stringify({ three: await get(three.peak.remote()), one: await get(one.peak.remote()) }));
    }`);
  assert.deepEqual(okJson(r), { three: 3, one: 1 });
});

test("a detached named actor outlives its job and is found by getActor from a second job; a non-detached one dies with its job", async () => {
  const first = await c.submit(`
    import { remote, get } from "tray";
    const Box = remote(class Box { v = 0; set(v: number) { this.v = v; return v; } get() { return this.v; } pid() { return process.pid; } });
    export default async function main() {
      const keeper = Box.options({ name: "keeper", lifetime: "detached" }).remote();
      const temp = Box.options({ name: "temp" }).remote();
      const inNs = Box.options({ name: "keeper", namespace: "other", lifetime: "detached" }).remote();
      await get([keeper.set.remote(41), temp.set.remote(7), inNs.set.remote(99)]);
      console.log(JSON.stringify({ keeperPid: await get(keeper.pid.remote()), tempPid: await get(temp.pid.remote()) }));
    }`);
  const p = okJson(first);
  const alive = (pid: number) => !pidGone(pid);
  // The job's end kills its non-detached actors.
  const deadline = Date.now() + 5000;
  while (alive(p.tempPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(alive(p.tempPid), false, "the non-detached actor's process is gone");
  assert.equal(alive(p.keeperPid), true, "the detached actor's process lives on");

  const second = await c.submit(`
    import { get, getActor, kill } from "tray";
    export default async function main() {
      const k: any = await getActor("keeper");
      const v = await get(k.get.remote());
      const other: any = await getActor("keeper", { namespace: "other" });
      const ov = await get(other.get.remote());
      let temp: any;
      try { await getActor("temp"); temp = "found"; } catch (e: any) { temp = e.message; }
      let missing: any;
      try { await getActor("keeper", { namespace: "nowhere" }); missing = "found"; } catch (e: any) { missing = e.message; }
      kill(k); kill(other);
      console.log(JSON.stringify({ v, ov, temp, missing }));
    }`);
  const o = okJson(second);
  assert.equal(o.v, 41, "state survived the first job");
  assert.equal(o.ov, 99, "namespaces keep same-named actors apart");
  assert.match(o.temp, /no actor named "temp" in namespace "default"/);
  assert.match(o.missing, /no actor named "keeper" in namespace "nowhere"/);
});

test("getIfExists returns the existing named actor; a second actor with a taken name fails clearly", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const Ctr = remote(class Ctr { n = 0; inc() { return ++this.n; } });
    export default async function main() {
      const a = Ctr.options({ name: "shared" }).remote();
      await get(a.inc.remote());
      const b = Ctr.options({ name: "shared", getIfExists: true }).remote();
      const viaB = await get(b.inc.remote());
      const dup = Ctr.options({ name: "shared" }).remote();
      let dupErr: any;
      try { await get(dup.inc.remote()); } catch (e: any) { dupErr = { name: e.name, message: e.message }; }
      const fresh = Ctr.options({ name: "fresh", getIfExists: true }).remote();
      console.log(JSON.stringify({ viaB, viaA: await get(a.inc.remote()), dupErr, fresh: await get(fresh.inc.remote()) }));
    }`);
  const o = okJson(r);
  assert.equal(o.viaB, 2, "b is the same actor as a");
  assert.equal(o.viaA, 3);
  assert.equal(o.dupErr.name, "ActorDiedError");
  assert.match(o.dupErr.message, /an actor named "shared" already exists in namespace "default"; pass getIfExists: true/);
  assert.equal(o.fresh, 1, "getIfExists creates the actor when none has the name");
});

test("an actor whose process is killed is restarted per maxRestarts with fresh state, then dies for good", async () => {
  const r = await c.submit(`
    import { remote, get, ActorDiedError } from "tray";
    const Ctr = remote(class Ctr { n = 0; inc() { return ++this.n; } pid() { return process.pid; } });
    async function killAndWait(pid: number) {
      process.kill(pid, "SIGKILL");
      for (;;) { try { process.kill(pid, 0); } catch { return; } await new Promise((r) => setTimeout(r, 10)); }
    }
    export default async function main() {
      const a = Ctr.options({ maxRestarts: 1, maxTaskRetries: 1 }).remote();
      await get([a.inc.remote(), a.inc.remote()]);
      const pid1 = await get(a.pid.remote());
      await killAndWait(pid1);
      const afterRestart = await get(a.inc.remote());
      const pid2 = await get(a.pid.remote());
      await killAndWait(pid2);
      let final: any;
      try { await get(a.inc.remote()); final = "alive"; } catch (e: any) { final = { name: e.name, inst: e instanceof ActorDiedError, message: e.message }; }

      const b = Ctr.options({ maxRestarts: 0 }).remote();
      const pidB = await get(b.pid.remote());
      await killAndWait(pidB);
      let noRestart: any;
      try { await get(b.inc.remote()); noRestart = "alive"; } catch (e: any) { noRestart = { name: e.name, message: e.message }; }
      console.log(JSON.stringify({ pid1, pid2, afterRestart, final, noRestart, pidB }));
    }`);
  const o = okJson(r);
  assert.notEqual(o.pid1, o.pid2, "a new process");
  assert.equal(o.afterRestart, 1, "state was reset by the restart");
  assert.equal(o.final.name, "ActorDiedError");
  assert.equal(o.final.inst, true);
  assert.match(o.final.message, new RegExp(`Ctr actor .* is dead: its process \\(pid ${o.pid2}\\) was killed by SIGKILL`));
  assert.equal(o.noRestart.name, "ActorDiedError");
  assert.match(o.noRestart.message, new RegExp(`pid ${o.pidB}\\) was killed by SIGKILL`));
});

test("kill() ends an actor (calls reject with ActorDiedError); kill with noRestart: false restarts it", async () => {
  const r = await c.submit(`
    import { remote, get, kill } from "tray";
    const Ctr = remote(class Ctr { n = 0; inc() { return ++this.n; } pid() { return process.pid; } });
    export default async function main() {
      const a = Ctr.remote();
      const pidA = await get(a.pid.remote());
      kill(a);
      let killed: any;
      try { await get(a.inc.remote()); killed = "alive"; } catch (e: any) { killed = { name: e.name, message: e.message }; }
      const b = Ctr.options({ maxRestarts: 1, maxTaskRetries: 1 }).remote();
      await get(b.inc.remote());
      const pidB = await get(b.pid.remote());
      kill(b, { noRestart: false });
      const afterRestart = await get(b.inc.remote());
      const pidB2 = await get(b.pid.remote());
      console.log(JSON.stringify({ killed, afterRestart, restartedInNewProcess: pidB !== pidB2, pidA }));
    }`);
  const o = okJson(r);
  assert.equal(o.killed.name, "ActorDiedError");
  assert.match(o.killed.message, /killed with kill\(\)/);
  assert.equal(o.afterRestart, 1);
  assert.equal(o.restartedInNewProcess, true);
  const deadline = Date.now() + 10_000;
  while (!pidGone(o.pidA) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(pidGone(o.pidA), true, "the killed actor's process exited");
});

test("an actor whose constructor throws: its calls reject with ActorDiedError naming the cause", async () => {
  const r = await c.submit(`
    import { remote, get, availableResources } from "tray";
    const Bad = remote(class Bad { constructor(cfg: string) { if (cfg !== "ok") throw new RangeError("bad config: " + cfg); } hi() { return "hi"; } }, { maxRestarts: 2, numCpus: 1 });
    export default async function main() {
      const b = Bad.remote("nope");
      const errs: any[] = [];
      for (const ref of [b.hi.remote(), b.hi.remote()]) {
        try { await get(ref); errs.push("ok"); } catch (e: any) { errs.push({ name: e.name, message: e.message }); }
      }
      const cpuAfterFailure = (await availableResources()).CPU;
      const good = await get(Bad.remote("ok").hi.remote());
      console.log(JSON.stringify({ errs, good, cpuAfterFailure }));
    }`);
  const o = okJson(r);
  for (const e of o.errs) {
    assert.equal(e.name, "ActorDiedError");
    assert.match(e.message, /its constructor threw: RangeError: bad config: nope/);
  }
  assert.equal(o.good, "hi");
  assert.equal(o.cpuAfterFailure, 2, "the failed actor's CPU came back");
});

test("actor handles can be passed to tasks and to other actors, directly or nested", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const Ctr = remote(class Ctr { n = 0; inc(by: number) { return (this.n += by); } value() { return this.n; } });
    const bump = remote(async (h: any, by: number) => get(h.inc.remote(by)));
    const bumpNested = remote(async (o: { target: any }) => get(o.target.inc.remote(100)));
    const Relay = remote(class Relay { async relay(h: any) { return get(h.inc.remote(1000)); } });
    export default async function main() {
      const c = Ctr.remote();
      await get([bump.remote(c, 1), bump.remote(c, 2)]);
      await get(bumpNested.remote({ target: c }));
      const relay = Relay.remote();
      await get(relay.relay.remote(c));
      console.log(JSON.stringify({ value: await get(c.value.remote()) }));
    }`);
  assert.deepEqual(okJson(r), { value: 1103 });
});

test("after restarts, kills and failures every resource is back", async () => {
  const r = await c.cli(["status", "--json"]);
  const s = JSON.parse(r.stdout);
  assert.deepEqual(s.nodes[0].available, s.nodes[0].resources);
  const live = s.actors.filter((a: any) => a.state !== "dead");
  assert.deepEqual(live, [], "every actor of the finished jobs is dead (the detached ones were killed)");
});
