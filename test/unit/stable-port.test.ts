// The local head's port: below the kernel's ephemeral range (so no outgoing connection can hold
// it when a killed head comes back), free, and on loopback.
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { ephemeralRangeStart, stablePort } from "../../src/launcher/stable-port.js";

describe("stablePort", () => {
  it("picks a free loopback port below the ephemeral range", async () => {
    const start = ephemeralRangeStart();
    assert.ok(start > 2048 && start <= 65535, `ephemeral range starts at ${start}`);
    for (let i = 0; i < 5; i++) {
      const port = await stablePort();
      assert.ok(port > 1024 && port < start, `port ${port} is below ${start}`);
      const s = net.createServer();
      await new Promise<void>((res, rej) => s.once("error", rej).listen({ port, host: "127.0.0.1", exclusive: true }, () => res()));
      await new Promise((r) => s.close(r));
    }
  });

  it("never hands out a port that is taken: 0 (the kernel's pick) when every candidate is", async () => {
    const port = await stablePort();
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen({ port, host: "127.0.0.1" }, () => r()));
    assert.equal(await stablePort(5, [port, port]), 0);
    await new Promise((r) => busy.close(r));
    assert.equal(await stablePort(5, [port, port]), port);
  });
});
