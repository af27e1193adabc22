// Progress output without a terminal: plain timestamped lines, or JSON lines.
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { createProgress } from "../../src/launcher/progress.js";

function capture() {
  const s = new PassThrough() as unknown as NodeJS.WriteStream;
  let out = "";
  (s as unknown as PassThrough).on("data", (d) => (out += d));
  return { s, text: () => out };
}

test("plain lines: one per change, failures marked", () => {
  const c = capture();
  const p = createProgress({ stream: c.s });
  p.update("h1", "connecting", "root@10.0.0.1");
  p.update("h1", "connecting", "root@10.0.0.1");
  p.update("h1", "joined");
  p.fail("h2", "Cannot reach 10.0.0.2.");
  p.log("note");
  p.done();
  p.done();
  const lines = c.text().trim().split("\n");
  assert.equal(lines.length, 4);
  assert.match(lines[0]!, /^\d\d:\d\d:\d\d h1: connecting root@10\.0\.0\.1$/);
  assert.match(lines[1]!, /h1: joined$/);
  assert.match(lines[2]!, /h2: FAILED Cannot reach 10\.0\.0\.2\.$/);
  assert.equal(lines[3], "note");
});

test("json lines", () => {
  const c = capture();
  const p = createProgress({ stream: c.s, json: true });
  p.update("h1", "setup 1/2", "$ apt-get update");
  p.fail("h1", "boom");
  const rows = c.text().trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(rows.map(({ ts, ...r }) => r), [{ node: "h1", step: "setup 1/2", detail: "$ apt-get update" }, { node: "h1", step: "failed", error: "boom" }]);
});

test("ink on a (fake) terminal draws and stops", async () => {
  const c = capture();
  Object.assign(c.s, { isTTY: true, columns: 100, rows: 30 });
  const p = createProgress({ stream: c.s, live: true });
  p.update("h1", "connecting");
  p.update("h2", "uploading agent", "2 MiB");
  await new Promise((r) => setTimeout(r, 300));
  p.update("h1", "joined");
  p.fail("h2", "disk full");
  await new Promise((r) => setTimeout(r, 100));
  p.done();
  const text = c.text();
  assert.match(text, /h1/);
  assert.match(text, /joined/);
  assert.match(text, /disk full/);
});
