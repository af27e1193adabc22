// Framing of the local protocol: frames split across chunks, several frames in one chunk,
// oversized and undecodable frames, and the writer batching messages into one frame.
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { FrameReader, FrameWriter, MAX_FRAME_BYTES, connectFrames, decodeMessages, encodeMessages } from "../../src/protocol/frame.js";
import { native } from "../../src/runtime/native.js";

function frame(msgs: unknown[]): Buffer {
  const body = encodeMessages(msgs);
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length, 0);
  return Buffer.concat([head, Buffer.from(body)]);
}

function collect() {
  const got: unknown[][] = [];
  const errors: Error[] = [];
  const r = new FrameReader((m) => got.push(m), (e) => errors.push(e));
  return { r, got, errors };
}

describe("FrameReader", () => {
  it("reassembles a frame delivered one byte at a time", () => {
    const { r, got, errors } = collect();
    const f = frame([{ t: "put", id: "a", n: 1 }, { t: "sub", ids: ["x", "y"] }]);
    for (let i = 0; i < f.length; i++) {
      r.push(f.subarray(i, i + 1));
      if (i < f.length - 1) assert.equal(got.length, 0, `decoded early at byte ${i}`);
    }
    assert.deepEqual(got, [[{ t: "put", id: "a", n: 1 }, { t: "sub", ids: ["x", "y"] }]]);
    assert.deepEqual(errors, []);
  });

  it("splits several frames that arrive in one chunk, and a frame split in the middle of its header", () => {
    const { r, got } = collect();
    const a = frame([{ t: "a" }]);
    const b = frame([{ t: "b", big: "x".repeat(70_000) }]);
    const c = frame([{ t: "c" }, { t: "c2" }]);
    const all = Buffer.concat([a, b, c]);
    // a + b + the first two bytes of c's header, then the rest
    const cut = a.length + b.length + 2;
    r.push(all.subarray(0, cut));
    assert.equal(got.length, 2);
    r.push(all.subarray(cut));
    assert.deepEqual(
      got.map((msgs) => msgs.map((m: any) => m.t)),
      [["a"], ["b"], ["c", "c2"]],
    );
    assert.equal((got[1]![0] as any).big.length, 70_000);
  });

  it("carries binary payloads byte for byte", () => {
    const { r, got } = collect();
    const bytes = new Uint8Array(200_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 255;
    const f = frame([{ t: "put", v: { e: 1, d: bytes } }]);
    // arbitrary chunking
    for (let i = 0; i < f.length; i += 65_536) r.push(f.subarray(i, i + 65_536));
    const d = (got[0]![0] as any).v.d as Uint8Array;
    assert.equal(d.length, bytes.length);
    assert.ok(Buffer.from(d).equals(Buffer.from(bytes)));
  });

  it("refuses a frame whose length exceeds the limit, without buffering it", () => {
    const { r, got, errors } = collect();
    const head = Buffer.alloc(4);
    head.writeUInt32LE(MAX_FRAME_BYTES + 1, 0);
    r.push(head);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /exceeds the \d+-byte limit/);
    // Whatever follows is not decoded as messages.
    r.push(frame([{ t: "after" }]));
    assert.equal(got.length, 0);
  });

  it("reports an undecodable body and keeps reading the next frame", () => {
    const { r, got, errors } = collect();
    const garbage = Buffer.from([0xc1, 0xc1, 0xc1]); // 0xc1 is never used in msgpack
    const head = Buffer.alloc(4);
    head.writeUInt32LE(garbage.length, 0);
    r.push(Buffer.concat([head, garbage, frame([{ t: "ok" }])]));
    assert.equal(errors.length, 1);
    assert.deepEqual(got, [[{ t: "ok" }]]);
  });

  it("rejects a payload that is not an array of messages", () => {
    assert.throws(() => decodeMessages(encodeMessages({ t: "x" } as any)), /not an array/);
  });
});

describe("FrameWriter", () => {
  function fakeSocket() {
    const writes: Buffer[] = [];
    return {
      writes,
      destroyed: false,
      write(b: Buffer) { writes.push(Buffer.from(b)); return true; },
    };
  }

  it("queues messages sent in one turn into a single frame", async () => {
    const s = fakeSocket();
    const w = new FrameWriter(s as any);
    for (let i = 0; i < 1000; i++) w.send({ t: "submit", i });
    assert.equal(s.writes.length, 0, "nothing is written while the sending code still runs");
    await new Promise((r) => setImmediate(r));
    assert.equal(s.writes.length, 1, "the whole frame (length + body) in one write");
    const { r, got } = collect();
    r.push(Buffer.concat(s.writes));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.length, 1000);
    assert.deepEqual(got[0]![999], { t: "submit", i: 999 });
  });

  it("flushNow writes immediately, and a destroyed socket is never written to", async () => {
    const s = fakeSocket();
    const w = new FrameWriter(s as any);
    w.send({ t: "jobDone", ok: true });
    w.flushNow();
    assert.equal(s.writes.length, 1);
    s.destroyed = true;
    w.send({ t: "late" });
    await new Promise((r) => setImmediate(r));
    assert.equal(s.writes.length, 1);
  });

  it("over a real socket: small frames go out by one write(2) of their own, and with the peer not reading (the kernel buffer full) and big frames between, every message arrives once and in order", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-frame-"));
    const sock = path.join(dir, "s");
    const got: any[] = [];
    let peer!: net.Socket;
    const server = net.createServer((c) => {
      peer = c;
      c.pause(); // not reading at first: writes fill the kernel's buffer
      const r = new FrameReader((m) => got.push(...m), (e) => assert.fail(e));
      c.on("data", (d) => r.push(d));
    });
    await new Promise<void>((r) => server.listen(sock, r));
    const client = net.createConnection(sock);
    await new Promise((r) => client.once("connect", r));
    const nat = native();
    let direct = 0;
    const restore = nat?.writeNow;
    if (nat) nat.writeNow = (fd, b) => (direct++, restore!.call(nat, fd, b));
    try {
      const w = new FrameWriter(client);
      const big = "x".repeat(200_000);
      const sent: any[] = [];
      for (let i = 0; i < 3000; i++) {
        const m = i % 500 === 250 ? { i, big } : { i };
        sent.push(m);
        w.send(m);
        if (i % 3 === 0) await new Promise((r) => setImmediate(r)); // several frames, not one
      }
      await new Promise((r) => setTimeout(r, 50));
      peer.resume();
      const until = Date.now() + 10_000;
      while (got.length < sent.length && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      assert.equal(got.length, sent.length);
      assert.deepEqual(got.map((m) => m.i), sent.map((m) => m.i), "in order, none twice");
      assert.ok(got.filter((m) => m.big === big).length === 6, "the big frames whole");
      if (nat) assert.ok(direct > 0, "small frames were written directly");
    } finally {
      if (nat) nat.writeNow = restore!;
      client.destroy();
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("native writeNow reports errors as -errno, and refuses what is not bytes", { skip: !native() }, () => {
    const nat = native()!;
    assert.equal(nat.writeNow(987654, Buffer.from("x")), -9, "EBADF");
    assert.throws(() => nat.writeNow(1, "x" as any), TypeError);
  });

  it("connectFrames: frames read past Node's stream machinery arrive whole and in order, binary payloads intact after later reads reuse the buffer, and the peer's close is seen", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-frame-"));
    const sock = path.join(dir, "s");
    const server = net.createServer(async (c) => {
      const w = new FrameWriter(c);
      for (let i = 0; i < 500; i++) {
        w.send({ i, bin: new Uint8Array(i % 7 === 0 ? 150_000 : 16).fill(i & 0xff) });
        if (i % 5 === 0) await new Promise((r) => setImmediate(r));
      }
      await new Promise((r) => setTimeout(r, 50));
      c.end();
    });
    await new Promise<void>((r) => server.listen(sock, r));
    const got: any[] = [];
    const reader = new FrameReader((m) => got.push(...m), (e) => assert.fail(e));
    const s = connectFrames(sock, reader);
    await new Promise<void>((r) => s.on("close", () => r()));
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(got.map((m) => m.i), Array.from({ length: 500 }, (_, i) => i));
    for (const m of got) {
      assert.equal(m.bin.length, m.i % 7 === 0 ? 150_000 : 16);
      assert.ok(m.bin.every((b: number) => b === (m.i & 0xff)), `message ${m.i}'s bytes were overwritten`);
    }
  });
});
