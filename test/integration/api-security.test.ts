// The head's API is the only door: a token is required (401 without it or with a wrong one);
// malformed frames, text frames, unknown ops, wrong field types and oversized frames get an
// error and the agent keeps serving; the token file is 0600; the API listens on 127.0.0.1 only.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import crypto from "node:crypto";
import WebSocket from "ws";
import { TestCluster } from "../helpers/cluster.js";
import { HeadClient } from "../../src/client/head-client.js";
import { decodeApi, encodeApi } from "../../src/protocol/api.js";
import { encodeMessages } from "../../src/protocol/frame.js";

const c = new TestCluster("apisec");
before(() => c.up());
after(() => c.down());

/** A raw authenticated WebSocket, collecting decoded replies. */
async function raw(): Promise<{ ws: WebSocket; next(): Promise<any> }> {
  const ws = new WebSocket(c.url(), { headers: { authorization: `Bearer ${c.token()}` } });
  const queue: any[] = [];
  const waiters: Array<(m: any) => void> = [];
  ws.on("message", (d) => {
    const m = decodeApi(d as Buffer);
    const w = waiters.shift();
    if (w) w(m);
    else queue.push(m);
  });
  await new Promise<void>((res, rej) => { ws.once("open", () => res()); ws.once("error", rej); });
  return {
    ws,
    next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error("no reply within 5 s")), 5000);
      waiters.push((m) => { clearTimeout(t); res(m); });
    })),
  };
}

async function pingWorks(): Promise<void> {
  const client = await c.client();
  try {
    assert.equal(await client.request("ping"), "pong");
  } finally {
    client.close();
  }
}

test("no token, a wrong token, or a token of the wrong length: 401, with a sentence from HeadClient", async () => {
  for (const token of ["", "wrong", c.token().slice(0, -1) + (c.token().endsWith("a") ? "b" : "a")]) {
    await assert.rejects(HeadClient.connect({ url: c.url(), token }), (e: Error) => {
      assert.equal(e.name, "UserError");
      assert.match(e.message, /refused the cluster token \(401\)/);
      return true;
    });
  }
  // a client that sends no Authorization header at all
  const status = await new Promise<number>((res) => {
    const ws = new WebSocket(c.url());
    ws.on("unexpected-response", (_req, r) => { res(r.statusCode!); ws.terminate(); });
    ws.on("open", () => { res(101); ws.close(); });
    ws.on("error", () => {});
  });
  assert.equal(status, 401);
  // the ?token= form works for tools that cannot set headers, and is checked the same way
  const viaQuery = new WebSocket(`${c.url()}?token=${c.token()}`);
  await new Promise<void>((res, rej) => { viaQuery.once("open", () => res()); viaQuery.once("error", rej); });
  viaQuery.close();
  const badQuery = await new Promise<number>((res) => {
    const ws = new WebSocket(`${c.url()}?token=nope`);
    ws.on("unexpected-response", (_req, r) => { res(r.statusCode!); ws.terminate(); });
    ws.on("error", () => {});
  });
  assert.equal(badQuery, 401);
  // plain HTTP gets no API
  const http = await fetch(c.url().replace("ws:", "http:"));
  assert.equal(http.status, 426);
});

test("malformed msgpack, a text frame, an unknown op and wrong field types each get an error reply; the agent keeps serving", async () => {
  const { ws, next } = await raw();
  ws.send(Buffer.from([0xc1, 0xff, 0x00, 0x13]));
  const badFrame = await next();
  assert.equal(badFrame.ok, false);
  assert.equal(badFrame.error.code, "BAD_FRAME");

  ws.send("{\"op\":\"ping\",\"rid\":1}");
  const text = await next();
  assert.equal(text.error.code, "BAD_FRAME");
  assert.match(text.error.message, /binary/);

  ws.send(encodeApi({ rid: 7, op: "shutdown" }));
  const unknown = await next();
  assert.deepEqual([unknown.rid, unknown.ok, unknown.error.code], [7, false, "BAD_REQUEST"]);
  assert.match(unknown.error.message, /unknown op "shutdown"/);

  ws.send(encodeApi({ rid: 8, op: "getJob", id: 42 }));
  const wrongType = await next();
  assert.deepEqual([wrongType.rid, wrongType.error.code], [8, "BAD_REQUEST"]);
  assert.match(wrongType.error.message, /getJob: id must be a string/);

  ws.send(encodeApi({ rid: 9, op: "submitJob", hash: "0".repeat(64), entrypoint: "x.ts", args: "not-an-array" }));
  const wrongArgs = await next();
  assert.equal(wrongArgs.error.code, "BAD_REQUEST");

  ws.send(encodeApi(["not", "an", "object"]));
  assert.equal((await next()).error.code, "BAD_REQUEST");

  ws.send(encodeApi({ rid: 10, op: "putBundle", hash: "a".repeat(64), data: Buffer.from("console.log(1)") }));
  const corrupt = await next();
  assert.deepEqual([corrupt.rid, corrupt.ok, corrupt.error.code], [10, false, "FAILED"]);
  assert.match(corrupt.error.message, /content hash is/);

  // the same connection still works
  ws.send(encodeApi({ rid: 11, op: "ping" }));
  assert.deepEqual(await next(), { rid: 11, ok: true, value: "pong" });
  ws.close();
  await pingWorks();
});

test("a frame announcing more than the size limit is refused without being read; the agent keeps serving", async () => {
  const u = new URL(c.url());
  const sock = net.connect(Number(u.port), u.hostname);
  await new Promise((res) => sock.once("connect", res));
  const key = crypto.randomBytes(16).toString("base64");
  sock.write(`GET / HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${c.token()}\r\n\r\n`);
  let got = Buffer.alloc(0);
  sock.on("data", (d) => (got = Buffer.concat([got, d])));
  const closed = new Promise<void>((res) => sock.on("close", () => res()));
  while (!got.includes("\r\n\r\n")) await new Promise((r) => setTimeout(r, 10));
  assert.match(got.toString("latin1"), /^HTTP\/1.1 101/);
  const upgradeLen = got.indexOf("\r\n\r\n") + 4;
  // binary frame, masked, 64-bit length of 8 GiB, then only a few bytes
  const header = Buffer.alloc(14);
  header[0] = 0x82;
  header[1] = 0x80 | 127;
  header.writeBigUInt64BE(8n * 1024n ** 3n, 2);
  crypto.randomBytes(4).copy(header, 10);
  sock.write(Buffer.concat([header, Buffer.alloc(64)]));
  await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error("connection not closed")), 5000))]);
  const frame = got.subarray(upgradeLen);
  assert.equal(frame[0]! & 0x0f, 0x8, "a close frame");
  assert.equal(frame.readUInt16BE(2), 1009, "close code 1009: message too big");
  await pingWorks();
});

test("the node agent's local socket drops malformed and oversized frames and keeps serving", async () => {
  const ready = JSON.parse(fs.readFileSync(path.join(c.home, "clusters", "apisec", "head", "ready.json"), "utf8"));
  const sockPath: string = ready.socket;
  assert.equal(fs.statSync(sockPath).mode & 0o777, 0o600, "only the agent's user may connect");
  const frame = (body: Uint8Array) => {
    const h = Buffer.alloc(4);
    h.writeUInt32LE(body.length, 0);
    return Buffer.concat([h, body]);
  };
  // messages that fail validation, then garbage, then a huge length
  const s = net.connect(sockPath);
  await new Promise((res) => s.once("connect", res));
  s.write(frame(encodeMessages([{ t: "hello", role: "admin", pid: "x" }, { t: "decref", ids: [1] }, { t: "nonsense" }, { t: "submit" }])));
  s.write(frame(Buffer.from([0xc1, 0xc1])));
  const big = Buffer.alloc(4);
  big.writeUInt32LE(0xffffffff, 0);
  s.write(big);
  await new Promise<void>((res) => { s.on("close", () => res()); s.on("error", () => {}); });
  // the agent is fine: the API answers and jobs run
  await pingWorks();
  const r = await c.submit(`import { remote, get } from "tray"; const f = remote(() => 7); export default async function main() { console.log(await get(f.remote())); }`);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^7$/m);
});

test("the token file is mode 0600 and the API listens on 127.0.0.1 only", async () => {
  const tokenFile = path.join(c.home, "clusters", "apisec", "token");
  assert.equal(fs.statSync(tokenFile).mode & 0o777, 0o600);
  assert.ok(c.token().length >= 32, "a long random token");
  const s = c.state();
  assert.equal(s.head.apiHost, "127.0.0.1");
  // /proc/net/tcp lists the listening socket: local address 0100007F (127.0.0.1), never 00000000
  const port = s.head.apiPort.toString(16).toUpperCase().padStart(4, "0");
  const listening = [...fs.readFileSync("/proc/net/tcp", "utf8").split("\n"), ...fs.readFileSync("/proc/net/tcp6", "utf8").split("\n")]
    .map((l) => l.trim().split(/\s+/))
    .filter((cols) => cols[1]?.endsWith(`:${port}`) && cols[3] === "0A");
  assert.ok(listening.length >= 1, "the API port is listening");
  for (const cols of listening) assert.equal(cols[1], `0100007F:${port}`, `listening on ${cols[1]}`);
});
