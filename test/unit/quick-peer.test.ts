// Spin, then block (src/protocol/quick-peer.ts): the bounded socket poll of the native helpers,
// and the rule that polls only for a peer that came back quickly last time.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { QuickPeer } from "../../src/protocol/quick-peer.js";
import { native, socketFd } from "../../src/runtime/native.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-quick-peer-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let seq = 0;

/** A connected pair of Unix sockets: [client, server side]. */
async function pair(): Promise<[net.Socket, net.Socket]> {
  const file = path.join(dir, `s${++seq}.sock`);
  // The accepted end never reads (pauseOnConnect): what arrives stays in the socket for the poll.
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(file, r));
  const accepted = new Promise<net.Socket>((r) => server.once("connection", r));
  const client = net.createConnection(file);
  await new Promise((r) => client.once("connect", r));
  const s = await accepted;
  server.close();
  return [client, s];
}
const skip = native() ? false : "native helpers not built here";

describe("spinReadable", () => {
  it("gives up after its budget with nothing to read, returns at once when bytes wait, and when the peer has gone", { skip }, async () => {
    const nat = native()!;
    const [client, server] = await pair();
    const fd = socketFd(server)!;
    let t0 = process.hrtime.bigint();
    assert.equal(nat.spinReadable(fd, 2000), false);
    const waited = Number(process.hrtime.bigint() - t0) / 1000;
    assert.ok(waited >= 2000, `polled ${waited} µs of 2000`);
    client.write("x");
    await new Promise((r) => setTimeout(r, 20));
    t0 = process.hrtime.bigint();
    assert.equal(nat.spinReadable(fd, 1_000_000), true);
    assert.ok(Number(process.hrtime.bigint() - t0) / 1000 < 500_000, "bytes waiting: no polling to the budget");
    client.destroy();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(nat.spinReadable(fd, 1_000_000), true, "a peer that hung up makes the socket readable too");
    server.destroy();
    assert.throws(() => nat.spinReadable(-1, 10), TypeError);
  });
});

describe("QuickPeer", () => {
  it("polls only for a peer that came back within the gate last time", { skip }, async () => {
    const [client, server] = await pair();
    const peer = new QuickPeer(client);
    assert.equal(peer.polling, false, "nothing known of the peer yet");
    peer.arrived(); // a message without our waiting: says nothing
    assert.equal(peer.polling, false);
    peer.wait();
    peer.arrived(); // back at once
    assert.equal(peer.polling, true);
    peer.wait();
    await new Promise((r) => setTimeout(r, 5));
    peer.arrived(); // 5 ms later: a peer that thinks between calls
    assert.equal(peer.polling, false);
    client.destroy();
    server.destroy();
  });

  it("is off with TRAY_SPIN_US=0", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "-e", `import("${path.resolve("src/protocol/quick-peer.ts")}").then((m) => console.log(String(m.QuickPeer.off)))`], {
      env: { ...process.env, TRAY_SPIN_US: "0" },
      encoding: "utf8",
    });
    assert.equal(r.stdout.trim(), "true", r.stderr);
  });
});
