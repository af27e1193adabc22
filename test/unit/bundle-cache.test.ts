// The submitter's bundle cache (src/bundle): an unchanged job is not bundled again, and any
// change that could change the bundle rebuilds it — an edit to an imported file (even one
// that keeps its size and mtime), a new file that an import now resolves to, a package.json,
// a re-pointed package symlink.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { bundleJob } from "../../src/bundle/index.js";

let home: string;
let proj: string;
const savedHome = process.env.TRAY_HOME;

before(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), "tray-bundle-cache-"));
  process.env.TRAY_HOME = home;
});
after(() => {
  if (savedHome === undefined) delete process.env.TRAY_HOME;
  else process.env.TRAY_HOME = savedHome;
  fs.rmSync(home, { recursive: true, force: true });
});

/** Writes files with an mtime a minute ago (files written during a build are never cached). */
function write(rel: string, text: string, mtime = new Date(Date.now() - 60_000)): string {
  const f = path.join(proj, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, text);
  fs.utimesSync(f, mtime, mtime);
  return f;
}

/** Folders get an old mtime too, so the test controls what changed. */
function ageDirs(): void {
  const old = new Date(Date.now() - 60_000);
  for (const d of [proj, ...fs.readdirSync(proj, { recursive: true, withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => path.join(e.parentPath, e.name))]) {
    fs.utimesSync(d, old, old);
  }
}

function freshProject(name: string): void {
  proj = path.join(home, name);
  fs.mkdirSync(proj, { recursive: true });
}

const text = (b: { code: Uint8Array }) => Buffer.from(b.code).toString("utf8");

test("an unchanged job comes from the cache, with the same hash and bytes", async () => {
  freshProject("same");
  write("lib/msg.ts", `export const msg = "one";\n`);
  const entry = write("job.ts", `import { msg } from "./lib/msg";\nexport default function main() { console.log(msg); }\n`);
  ageDirs();
  const a = await bundleJob(entry);
  assert.ok(!a.cached, "the first bundle is built");
  const b = await bundleJob(entry);
  assert.equal(b.cached, true, "the second comes from the cache");
  assert.equal(b.hash, a.hash);
  assert.deepEqual(Buffer.from(b.code), Buffer.from(a.code));
});

test("an edit to an imported file rebuilds, even when its size and mtime are unchanged", async () => {
  freshProject("edit");
  const lib = write("lib/msg.ts", `export const msg = "one";\n`);
  const entry = write("job.ts", `import { msg } from "./lib/msg";\nexport default function main() { console.log(msg); }\n`);
  ageDirs();
  const a = await bundleJob(entry);
  assert.equal((await bundleJob(entry)).cached, true);
  const st = fs.statSync(lib);
  fs.writeFileSync(lib, `export const msg = "two";\n`); // same length
  fs.utimesSync(lib, st.atime, st.mtime); // and the old mtime
  const b = await bundleJob(entry);
  assert.ok(!b.cached, "rebuilt");
  assert.notEqual(b.hash, a.hash);
  assert.match(text(b), /"two"/);
  // An ordinary edit (new mtime, new size) too.
  write("lib/msg.ts", `export const msg = "three!";\n`, new Date(Date.now() - 30_000));
  const c = await bundleJob(entry);
  assert.ok(!c.cached);
  assert.match(text(c), /"three!"/);
  assert.equal((await bundleJob(entry)).cached, true, "and the new version is cached in turn");
});

test("a new file that an import now resolves to rebuilds", async () => {
  freshProject("resolve");
  write("lib/msg.js", `export const msg = "from js";\n`);
  const entry = write("job.ts", `import { msg } from "./lib/msg";\nexport default function main() { console.log(msg); }\n`);
  ageDirs();
  assert.match(text(await bundleJob(entry)), /from js/);
  assert.equal((await bundleJob(entry)).cached, true);
  write("lib/msg.ts", `export const msg = "from ts";\n`); // esbuild prefers .ts over .js
  const b = await bundleJob(entry);
  assert.ok(!b.cached);
  assert.match(text(b), /from ts/);
});

test("a package.json above the job changes: rebuilt (it can change how imports resolve)", async () => {
  freshProject("pkg");
  write("node_modules/dep/package.json", JSON.stringify({ name: "dep", main: "a.js" }));
  write("node_modules/dep/a.js", `exports.which = "a";\n`);
  write("node_modules/dep/b.js", `exports.which = "b";\n`);
  const entry = write("job.ts", `import { which } from "dep";\nexport default function main() { console.log(which); }\n`);
  ageDirs();
  assert.match(text(await bundleJob(entry)), /"a"/);
  assert.equal((await bundleJob(entry)).cached, true);
  write("node_modules/dep/package.json", JSON.stringify({ name: "dep", main: "b.js" }), new Date(Date.now() - 30_000));
  const b = await bundleJob(entry);
  assert.ok(!b.cached);
  assert.match(text(b), /"b"/);
});

test("a package symlink re-pointed (pnpm, npm link) or a package appearing closer: rebuilt", async () => {
  freshProject("link");
  write("store/dep-1/index.js", `exports.v = "dep one";\n`);
  write("store/dep-2/index.js", `exports.v = "dep two";\n`);
  write("app/node_modules/.keep", "");
  const entry = write("app/src/job.ts", `import { v } from "dep";\nexport default function main() { console.log(v); }\n`);
  const link = path.join(proj, "app", "node_modules", "dep");
  fs.symlinkSync(path.join(proj, "store", "dep-1"), link);
  ageDirs();
  assert.match(text(await bundleJob(entry)), /dep one/);
  assert.equal((await bundleJob(entry)).cached, true);
  fs.rmSync(link);
  fs.symlinkSync(path.join(proj, "store", "dep-2"), link);
  fs.utimesSync(path.join(proj, "app", "node_modules"), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  const b = await bundleJob(entry);
  assert.ok(!b.cached, "the symlink itself changed");
  assert.match(text(b), /dep two/);
  assert.equal((await bundleJob(entry)).cached, true);
  // A copy of the package closer to the job now wins the lookup.
  write("app/src/node_modules/dep/index.js", `exports.v = "dep closer";\n`);
  ageDirs();
  const c = await bundleJob(entry);
  assert.ok(!c.cached);
  assert.match(text(c), /dep closer/);
});

test("a job that no longer compiles reports its error instead of the cached bundle", async () => {
  freshProject("broken");
  const entry = write("job.ts", `export default function main() { console.log("ok"); }\n`);
  ageDirs();
  await bundleJob(entry);
  assert.equal((await bundleJob(entry)).cached, true);
  write("job.ts", `export default function main() { console.log("ok" }\n`, new Date(Date.now() - 30_000));
  await assert.rejects(bundleJob(entry), /Could not bundle .*job\.ts:1/);
});

test("a file modified around the build is not cached; TRAY_BUNDLE_CACHE=0 turns the cache off", async () => {
  freshProject("fresh");
  const entry = write("job.ts", `export default function main() { console.log("fresh"); }\n`, new Date());
  assert.ok(!(await bundleJob(entry)).cached);
  assert.ok(!(await bundleJob(entry)).cached, "written a moment ago: esbuild may have read another version");
  fs.utimesSync(entry, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  await bundleJob(entry);
  assert.equal((await bundleJob(entry)).cached, true);
  process.env.TRAY_BUNDLE_CACHE = "0";
  try {
    assert.ok(!(await bundleJob(entry)).cached);
  } finally {
    delete process.env.TRAY_BUNDLE_CACHE;
  }
});
