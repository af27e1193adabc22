// `tray down` of a local cluster removes the shared-memory stores of its own nodes only: a
// cluster of the same name under another TRAY_HOME (a benchmark running beside) keeps its
// store, where it used to lose it and fail its puts with ENOENT.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { it } from "node:test";

it("down removes this cluster's node stores in /dev/shm, not a same-named cluster's", { skip: !fs.existsSync("/dev/shm") }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "tray-down-shm-"));
  process.env.TRAY_HOME = home;
  const { downLocal } = await import("../../src/launcher/local.js");
  const name = `downshm${process.pid}`;
  const mine = path.join("/dev/shm", `tray-${name}-aaaaaaaa`);
  const theirs = path.join("/dev/shm", `tray-${name}-bbbbbbbb`);
  for (const d of [mine, theirs]) fs.mkdirSync(d, { recursive: true });
  try {
    const quiet = { update() {}, fail() {}, log() {}, done() {} };
    const state = {
      name,
      provider: "local",
      nodes: [{ name: "head", kind: "head" as const, nodeType: "head", id: "aaaaaaaa0123456789", privateIp: "127.0.0.1" }],
    };
    const removed = await downLocal(state as any, quiet);
    assert.ok(removed.includes(`/dev/shm/tray-${name}-aaaaaaaa`), removed.join(", "));
    assert.equal(fs.existsSync(mine), false);
    assert.equal(fs.existsSync(theirs), true, "the other cluster's store was removed");
  } finally {
    for (const d of [mine, theirs]) fs.rmSync(d, { recursive: true, force: true });
    fs.rmSync(home, { recursive: true, force: true });
  }
});
