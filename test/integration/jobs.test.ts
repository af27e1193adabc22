// Jobs through the real CLI: npm dependencies bundled, one upload per content hash, live log
// streaming, exit codes, --no-wait, `tray job list|status|logs [-f]|stop`, stopping a job that
// never ends stops its tasks and actors, job history survives kill -9 of the head, --env,
// and a job that does not compile gives one sentence naming file:line.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT, TestCluster, waitFor } from "../helpers/cluster.js";
import { jobIdOf, okJson, pidGone } from "../helpers/runtime.js";

const c = new TestCluster("jobs");
before(() => c.up());
after(() => c.down());

/** A job file in its own project folder whose node_modules has `yaml` (linked from this repo). */
function projectJob(name: string, src: string): string {
  const dir = path.join(c.home, `proj-${name}`);
  fs.mkdirSync(path.join(dir, "node_modules"), { recursive: true });
  const link = path.join(dir, "node_modules", "yaml");
  if (!fs.existsSync(link)) fs.symlinkSync(path.join(ROOT, "node_modules", "yaml"), link);
  const file = path.join(dir, "job.ts");
  fs.writeFileSync(file, src);
  return file;
}

function jobFile(src: string): string {
  const f = path.join(c.home, `job-${Math.random().toString(36).slice(2)}.ts`);
  fs.writeFileSync(f, src);
  return f;
}

const bundlesDir = () => path.join(c.home, "clusters", "jobs", "head", "bundles");

test("a job importing an npm package gets it bundled: it works in the driver and in tasks", async () => {
  const file = projectJob("deps", `
    import { remote, get } from "tray";
    import YAML from "yaml";
    const parse = remote((text: string) => YAML.parse(text));
    export default async function main() {
      const here = YAML.stringify({ a: [1, 2] });
      console.log(JSON.stringify({ here, there: await get(parse.remote("b: { c: 3 }")) }));
    }`);
  const r = await c.cli(["submit", file]);
  assert.deepEqual(okJson(r), { here: "a:\n  - 1\n  - 2\n", there: { b: { c: 3 } } });
});

test("the same bundle is uploaded once: a second identical submit reuses it", async () => {
  const file = jobFile(`export default async function main() { console.log("same bundle"); }`);
  const r1 = await c.cli(["submit", file]);
  assert.equal(r1.code, 0, r1.stderr);
  const files1 = fs.readdirSync(bundlesDir());
  const client = await c.client();
  const job1 = await client.getJob(jobIdOf(r1));
  const bundle = path.join(bundlesDir(), `${job1.bundle}.mjs`);
  const ino = fs.statSync(bundle).ino;
  const r2 = await c.cli(["submit", file]);
  assert.equal(r2.code, 0, r2.stderr);
  const job2 = await client.getJob(jobIdOf(r2));
  assert.equal(job2.bundle, job1.bundle, "same content, same hash");
  assert.deepEqual(fs.readdirSync(bundlesDir()), files1, "no new bundle file");
  assert.equal(fs.statSync(bundle).ino, ino, "the bundle was not written again");
  // and a client asking first is told it is there
  try {
    assert.equal(await client.uploadBundle(job1.bundle, new Uint8Array([1])), false, "hasBundle said yes, nothing was sent");
  } finally {
    client.close();
  }
});

test("the submitter's bundle cache: an edit to an imported file is what runs next, even with its size and mtime kept", async () => {
  const dir = fs.mkdtempSync(path.join(c.home, "cache-"));
  const lib = path.join(dir, "msg.ts");
  const file = path.join(dir, "job.ts");
  fs.writeFileSync(lib, `export const msg = "version 1";\n`);
  fs.writeFileSync(file, `import { msg } from "./msg";\nexport default function main() { console.log(msg); }\n`);
  const old = new Date(Date.now() - 60_000); // files written during a build are not cached
  for (const p of [lib, file, dir]) fs.utimesSync(p, old, old);
  const cache = path.join(c.home, "cache", "bundles");
  const r1 = await c.cli(["submit", file]);
  assert.equal(r1.code, 0, r1.stderr);
  assert.match(r1.stdout, /^version 1$/m);
  assert.ok(fs.readdirSync(cache).some((f) => f.endsWith(".json")), "the bundle was cached");
  const r2 = await c.cli(["submit", file]);
  assert.match(r2.stdout, /^version 1$/m);
  fs.writeFileSync(lib, `export const msg = "version 2";\n`);
  fs.utimesSync(lib, old, old);
  const r3 = await c.cli(["submit", file]);
  assert.equal(r3.code, 0, r3.stderr);
  assert.match(r3.stdout, /^version 2$/m);
});

test("a head that lacks a cached bundle gets its bytes with the submit", async () => {
  const file = jobFile(`export default async function main() { console.log("resent"); }`);
  const old = new Date(Date.now() - 60_000);
  fs.utimesSync(file, old, old);
  const r1 = await c.cli(["submit", file]);
  assert.equal(r1.code, 0, r1.stderr);
  const client = await c.client();
  const hash = (await client.getJob(jobIdOf(r1))).bundle;
  client.close();
  fs.rmSync(path.join(bundlesDir(), `${hash}.mjs`));
  const r2 = await c.cli(["submit", file]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /^resent$/m);
  assert.ok(fs.existsSync(path.join(bundlesDir(), `${hash}.mjs`)), "uploaded again");
});

test("logs stream live: the job's first line reaches the submitter while the job still runs", async () => {
  const dir = fs.mkdtempSync(path.join(c.home, "live-"));
  const file = jobFile(`
    import fs from "node:fs";
    export default async function main() {
      console.log("first line");
      // Wait until the test has seen the first line (it creates the file), at most 20 s.
      const deadline = Date.now() + 20_000;
      while (!fs.existsSync(${JSON.stringify(dir + "/seen")}) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      console.log(fs.existsSync(${JSON.stringify(dir + "/seen")}) ? "second line" : "never saw the first line live");
    }`);
  const child = c.spawnCli(["submit", file]);
  let out = "";
  let exited = false;
  const exitCode = new Promise<number>((res) => child.on("exit", (code) => { exited = true; res(code ?? 1); }));
  child.stdout.on("data", (d) => (out += d));
  await waitFor(() => out.includes("first line"), 20_000, "the first line");
  assert.equal(exited, false, "the submitter is still following");
  assert.ok(!out.includes("second line"));
  fs.writeFileSync(path.join(dir, "seen"), "");
  const code = await exitCode;
  assert.equal(code, 0);
  assert.match(out, /first line\nsecond line\n/);
});

test("exit code follows the job; --no-wait returns at once; tray job list/status/logs report it", async () => {
  const good = await c.cli(["submit", jobFile(`export default async function main() { console.log("fine"); return { answer: 42 }; }`)]);
  assert.equal(good.code, 0);
  assert.match(good.stderr, /SUCCEEDED/);
  const bad = await c.cli(["submit", jobFile(`export default async function main() { console.log("before"); throw new TypeError("broken job"); }`)]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /FAILED.*TypeError: broken job/);

  const file = jobFile(`export default async function main(args: string[]) { await new Promise((r) => setTimeout(r, 500)); console.log("args " + args.join(",")); }`);
  const nw = await c.cli(["submit", "--no-wait", file, "--", "x", "y"]);
  assert.equal(nw.code, 0, nw.stderr);
  assert.doesNotMatch(nw.stdout, /args/, "--no-wait does not stream the job's output");
  const id = jobIdOf(nw);
  assert.match(nw.stderr, new RegExp(`tray job logs ${id} -f`));

  const follow = await c.cli(["job", "logs", id, "-f"]);
  assert.equal(follow.code, 0, follow.stderr);
  assert.match(follow.stdout, /^args x,y$/m);
  assert.match(follow.stderr, /SUCCEEDED/);

  const status = await c.cli(["job", "status", id]);
  assert.equal(status.code, 0);
  assert.match(status.stdout, new RegExp(`^${id}: SUCCEEDED`));
  const statusJson = JSON.parse((await c.cli(["job", "status", id, "--json"])).stdout);
  assert.equal(statusJson.status, "SUCCEEDED");
  assert.deepEqual(statusJson.args, ["x", "y"]);
  const failed = await c.cli(["job", "status", jobIdOf(bad)]);
  assert.equal(failed.code, 1, "status of a failed job exits 1");
  assert.match(failed.stdout, /FAILED/);
  assert.match(failed.stdout, /error: TypeError: broken job/);

  const logs = await c.cli(["job", "logs", jobIdOf(bad)]);
  assert.match(logs.stdout, /^before$/m);
  assert.match(logs.stderr, /TypeError: broken job/);

  const list = await c.cli(["job", "list"]);
  assert.equal(list.code, 0);
  assert.match(list.stdout, /^ID\s+STATUS\s+ENTRYPOINT/);
  for (const [j, st] of [[jobIdOf(good), "SUCCEEDED"], [jobIdOf(bad), "FAILED"], [id, "SUCCEEDED"]]) {
    assert.match(list.stdout, new RegExp(`^${j}\\s+${st}\\s`, "m"));
  }
  const listJson = JSON.parse((await c.cli(["job", "list", "--json"])).stdout);
  assert.equal(listJson.find((j: any) => j.id === jobIdOf(good)).result, JSON.stringify({ answer: 42 }));

  const unknown = await c.cli(["job", "status", "job-nope"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no job with id job-nope/);
  assert.doesNotMatch(unknown.stderr, /\n\s+at /, "no stack trace");
});

test("a job that never ends is stopped with `tray job stop`: STOPPED, and its tasks and actors stop", async () => {
  const dir = fs.mkdtempSync(path.join(c.home, "stop-"));
  const file = jobFile(`
    import { remote, get } from "tray";
    import fs from "node:fs";
    const Keeper = remote(class Keeper { pid() { return process.pid; } });
    const Detached = remote(class Detached { pid() { return process.pid; } });
    const spin = remote(async (f: string) => { fs.writeFileSync(f, String(process.pid)); await new Promise(() => {}); });
    export default async function main() {
      const k = Keeper.remote();
      const d = Detached.options({ name: "survivor", lifetime: "detached" }).remote();
      fs.writeFileSync(${JSON.stringify(dir)} + "/actor", String(await get(k.pid.remote())));
      fs.writeFileSync(${JSON.stringify(dir)} + "/detached", String(await get(d.pid.remote())));
      spin.remote(${JSON.stringify(dir)} + "/task");
      console.log("running forever");
      await new Promise(() => {});
    }`);
  const child = c.spawnCli(["submit", file]);
  const exited = new Promise<number>((res) => child.on("exit", (code) => res(code ?? 1)));
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const pids = await waitFor(() => {
    const f = (n: string) => (fs.existsSync(path.join(dir, n)) ? Number(fs.readFileSync(path.join(dir, n), "utf8")) : 0);
    const p = { actor: f("actor"), detached: f("detached"), task: f("task") };
    return p.actor && p.detached && p.task ? p : undefined;
  }, 20_000, "the job's actor and task to start");
  const id = /job (job-[a-z0-9]+) submitted/.exec(err)![1]!;
  const stop = await c.cli(["job", "stop", id]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.match(stop.stdout, new RegExp(`Stopping job ${id}`));
  const code = await exited;
  assert.equal(code, 1, "the follower exits 1");
  assert.match(err, /STOPPED/);
  const alive = (pid: number) => !pidGone(pid);
  await waitFor(() => !alive(pids.actor) && !alive(pids.task), 10_000, "the job's actor and task processes to end");
  assert.equal(alive(pids.detached), true, "a detached actor outlives the job");
  const st = JSON.parse((await c.cli(["job", "status", id, "--json"])).stdout);
  assert.equal(st.status, "STOPPED");
  const again = await c.cli(["job", "stop", id]);
  assert.match(again.stdout, /already ended \(STOPPED\)/);
  // clean up the detached actor
  const k = await c.cli(["submit", jobFile(`import { getActor, kill } from "tray"; export default async function main() { kill(await getActor("survivor")); }`)]);
  assert.equal(k.code, 0, k.stderr);
  await waitFor(() => !alive(pids.detached), 10_000, "the detached actor to be killed");
});

test("--env reaches the job's driver, tasks and actors", async () => {
  const r = await c.cli([
    "submit", "--env", "GREETING=hello world", "--env", "EMPTY=",
    jobFile(`
      import { remote, get } from "tray";
      const t = remote(() => process.env.GREETING);
      const A = remote(class A { g() { return process.env.GREETING; } });
      export default async function main() {
        console.log(JSON.stringify({ driver: process.env.GREETING, empty: process.env.EMPTY, task: await get(t.remote()), actor: await get(A.remote().g.remote()) }));
      }`),
  ]);
  assert.deepEqual(okJson(r), { driver: "hello world", empty: "", task: "hello world", actor: "hello world" });
  const other = await c.submit(`
    import { remote, get } from "tray";
    const t = remote(() => process.env.GREETING ?? null);
    export default async function main() { console.log(JSON.stringify({ task: await get(t.remote()) })); }`);
  assert.deepEqual(okJson(other), { task: null }, "another job does not see it");
});

test("a job file with a syntax error: one sentence naming file:line, no stack", async () => {
  const file = jobFile(`export default async function main() {\n  const x = ;\n}\n`);
  const r = await c.cli(["submit", file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`${path.basename(file).replace(".", "\\.")}:2:\\d+`));
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  const missing = await c.cli(["submit", path.join(c.home, "nope.ts")]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nope\.ts does not exist/);
  const noMain = await c.cli(["submit", jobFile(`export const x = 1;`)]);
  assert.equal(noMain.code, 1);
  assert.match(noMain.stderr, /no default export/);
});

/** Worker processes the head agent has now (its children running `agent.js worker`). */
function headWorkers(): number {
  const kids = fs.readFileSync(`/proc/${c.headPid()}/task/${c.headPid()}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
  return kids.filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes("worker");
    } catch {
      return false; // exited meanwhile
    }
  }).length;
}

test("tasks started at a job module's top level fail with the way out, and start no worker per task", async () => {
  // Workers import the module to find its functions. A top-level get() used to block each
  // importing worker, so the agent started another for the waiting tasks, which imported the
  // module in turn: hundreds of workers a minute and a job that never ended.
  const before = headWorkers();
  const r = await c.cli([
    "submit",
    jobFile(`
      import { remote, get } from "tray";
      const noop = remote((x: number) => x);
      const values = await get(Array.from({ length: 200 }, (_, i) => noop.remote(i)));
      export default async function main() { console.log(values.length); }`),
  ]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /\.remote\(\) of anonymous function at job-\w+\.ts:3 ran at the top level of the job's module/);
  assert.match(r.stderr, /move that work into the default export \(export default async function main\(args\)/);
  assert.ok(headWorkers() <= before + 4, `workers: ${before} before, ${headWorkers()} after`);
  // The same calls inside main() are fine, and so is defining functions at the top level.
  const ok = await c.submit(`
    import { remote, get, put } from "tray";
    const noop = remote((x: number) => x);
    export default async function main() { console.log(JSON.stringify({ n: (await get(Array.from({ length: 200 }, (_, i) => noop.remote(i)))).length, p: await get(put(5)) })); }`);
  assert.deepEqual(okJson(ok), { n: 200, p: 5 });
});

test("job records and logs survive kill -9 of the head; a job running at that moment is marked FAILED", async () => {
  const done = await c.cli(["submit", jobFile(`export default async function main() { console.log("remember me"); }`)]);
  assert.equal(done.code, 0);
  const doneId = jobIdOf(done);
  const running = await c.cli(["submit", "--no-wait", jobFile(`export default async function main() { console.log("started"); await new Promise(() => {}); }`)]);
  const runningId = jobIdOf(running);
  await waitFor(async () => (await c.cli(["job", "logs", runningId])).stdout.includes("started") || undefined, 10_000, "the running job's first line");
  process.kill(c.headPid(), "SIGKILL");
  const up = await c.cli(["up", c.configPath]);
  assert.equal(up.code, 0, up.stderr);
  const list = JSON.parse((await c.cli(["job", "list", "--json"])).stdout);
  assert.equal(list.find((j: any) => j.id === doneId)?.status, "SUCCEEDED");
  const lost = list.find((j: any) => j.id === runningId);
  assert.equal(lost?.status, "FAILED");
  assert.match(lost.error, /head agent stopped while the job was running/);
  const logs = await c.cli(["job", "logs", doneId]);
  assert.match(logs.stdout, /^remember me$/m);
  assert.ok(list.length >= 10, "every earlier job of this file is still listed");
  // and the restarted head runs new jobs
  const after = await c.cli(["submit", jobFile(`export default async function main() { console.log("after restart"); }`)]);
  assert.equal(after.code, 0, after.stderr);
});
