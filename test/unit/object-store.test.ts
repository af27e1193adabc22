// The shared-memory store's recycling of freed files and its pre-faulted warm files, and the
// two ends of an object transfer between nodes (agent/node/transfer.ts): what a reused file
// may never leak, what the store may never hand out, and what a cut transfer leaves behind.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { ObjectStore, sizeClass } from "../../agent/node/store.js";
import { fetchInto, sendFile } from "../../agent/node/transfer.js";
import { FREE_DIR, readGrowing, takeParkedFile, writeObjectFile } from "../../src/runtime/recycle.js";
import { until } from "../helpers/bytes.js";

const MiB = 1024 * 1024;
const root = fs.mkdtempSync(path.join(fs.existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), "tray-store-test-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let seq = 0;
function freshStore(capacity = 1024 * MiB): ObjectStore {
  const dir = path.join(root, `s${++seq}`);
  return new ObjectStore(dir, path.join(dir, "spill"), capacity);
}
const parked = (s: ObjectStore) => fs.readdirSync(path.join(s.dir, FREE_DIR)).sort();
function stored(s: ObjectStore, id: string, data: Uint8Array) {
  const p = path.join(s.dir, id);
  const rc = writeObjectFile(s.dir, p, data);
  const loc = { e: 1, size: data.byteLength, path: p, node: "n", ...(rc ? { rc } : {}) };
  s.add(id, loc);
  return loc;
}

describe("size classes", () => {
  it("round up to the next eighth of a power of two, 1 MiB at least", () => {
    assert.equal(sizeClass(100_000_000), 100_663_296); // 12 × 8 MiB
    assert.equal(sizeClass(64 * MiB), 64 * MiB);
    assert.equal(sizeClass(64 * MiB + 1), 72 * MiB);
    assert.equal(sizeClass(1), MiB);
    for (const n of [1.5 * MiB, 9e6, 33e6, 100e6, 700e6]) {
      const c = sizeClass(n);
      assert.ok(c >= n && c <= n * 1.125 + MiB, `${n} -> ${c}`);
    }
  });
});

describe("recycled store files", () => {
  it("a reused file holds exactly the new object: no byte of a longer previous one stays readable", () => {
    const s = freshStore();
    fs.writeFileSync(path.join(s.dir, FREE_DIR, `${3 * MiB}.1`), Buffer.alloc(3 * MiB, 0xee));
    const data = Buffer.alloc(2 * MiB, 0x11);
    const target = path.join(s.dir, "obj");
    assert.equal(writeObjectFile(s.dir, target, data), `${3 * MiB}.1`);
    assert.equal(fs.statSync(target).size, data.length);
    assert.ok(fs.readFileSync(target).equals(data));
    assert.deepEqual(parked(s), []);
  });

  it("a freed object's file is parked and the next put of its size writes into that very file", async () => {
    const s = freshStore();
    const loc = stored(s, "a", Buffer.alloc(2 * MiB, 1));
    const ino = fs.statSync(loc.path).ino;
    s.free("a", loc);
    assert.deepEqual(parked(s), [`${2 * MiB}.1`]);
    const next = stored(s, "b", Buffer.alloc(2 * MiB, 2));
    assert.equal(next.rc, `${2 * MiB}.1`);
    assert.equal(fs.statSync(next.path).ino, ino, "the pages of the freed file were not reused");
    assert.ok(fs.readFileSync(next.path).equals(Buffer.alloc(2 * MiB, 2)));
    assert.equal(s.stats().parkedBytes, 0);
  });

  it("after a big object the store pre-faults two warm files of its size class, never the live object's", async () => {
    const s = freshStore();
    const size = 9_000_000;
    const live = stored(s, "live", Buffer.alloc(size, 7));
    await until(() => parked(s).length === 2, "two pre-faulted files");
    for (const n of parked(s)) {
      assert.equal(Number(n.split(".")[0]), sizeClass(size));
      assert.equal(fs.statSync(path.join(s.dir, FREE_DIR, n)).size, sizeClass(size), "a pre-faulted file is whole before it is parked");
    }
    assert.deepEqual(fs.readdirSync(s.dir).filter((f) => f.startsWith(".prefault")), []);
    // Writers take the warm files (and the store makes more); the live object is never handed out.
    for (let i = 0; i < 4; i++) {
      const p = path.join(s.dir, `w${i}`);
      const rc = takeParkedFile(s.dir, size, p);
      if (rc) {
        fs.truncateSync(p, size);
        s.add(`w${i}`, { e: 1, size, path: p, node: "n", rc });
      }
      assert.notEqual(p, live.path);
    }
    assert.ok(fs.readFileSync(live.path).equals(Buffer.alloc(size, 7)), "the live object was overwritten");
    await until(() => s.stats().prefaultCount >= 3, "more warm files after writers took them");
    s.destroy();
  });

  it("pre-faulting stays within the parked budget (10% of a small store)", async () => {
    const s = freshStore(100 * MiB);
    stored(s, "x", Buffer.alloc(9 * MiB, 1));
    await until(() => parked(s).length === 1, "one warm file");
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(parked(s), [`${9 * MiB}.1`], "a second warm file would pass 10 MiB");
    assert.equal(s.stats().parkedBytes, 9 * MiB);
    stored(s, "y", Buffer.alloc(11 * MiB, 1)); // its class does not fit the budget at all
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(s.stats().parkedBytes <= 10 * MiB);
    s.destroy();
  });
});

/** An object server that sends `body` as the response, or only its first `cut` bytes. */
async function server(body: Buffer, opts: { cut?: number; announce?: number } = {}) {
  const srv = http.createServer((req, res) => {
    if (req.headers.authorization !== "Bearer tok") return void res.writeHead(401).end("no\n");
    res.writeHead(200, { "content-length": String(opts.announce ?? body.length) });
    if (opts.cut === undefined) return void res.end(body);
    res.write(body.subarray(0, opts.cut), () => setTimeout(() => res.destroy(), 50));
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return { port: (srv.address() as any).port as number, close: () => srv.close() };
}
const spec = (port: number, file: string, size: number, extra: Partial<Parameters<typeof fetchInto>[0]> = {}) => ({
  host: "127.0.0.1", port, path: "/object/x", token: "tok", file, size, reuse: false, stallMs: 5000, peer: "A", ...extra,
});

describe("object transfer", () => {
  const body = Buffer.alloc(5 * MiB);
  for (let i = 0; i < body.length; i += 4096) body[i] = i & 0xff;

  it("lands the object whole, and a reader following the growing file gets every byte", async () => {
    const srv = await server(body);
    const file = path.join(root, "t-whole");
    let reading: Promise<Buffer> | undefined;
    await fetchInto(spec(srv.port, file, body.length, { onStart: () => (reading = readGrowing(file, body.length)) }));
    assert.ok(fs.readFileSync(file).equals(body));
    assert.ok((await reading!).equals(body));
    srv.close();
  });

  it("a transfer cut mid-stream removes its file, and a reader of the growing file fails with ENOENT", async () => {
    const srv = await server(body, { cut: 2 * MiB });
    const file = path.join(root, "t-cut");
    let reading: Promise<Buffer> | undefined;
    await assert.rejects(
      fetchInto(spec(srv.port, file, body.length, { onStart: () => (reading = readGrowing(file, body.length)) })),
      /cut after \d+ of 5242880 bytes/,
    );
    assert.equal(fs.existsSync(file), false, "half an object was left in the store");
    await assert.rejects(reading!, (e: any) => e.code === "ENOENT" && /abandoned/.test(e.message));
    srv.close();
  });

  it("a wrong size, a wrong token or a stalled peer fail with a sentence and leave no file", async () => {
    const file = path.join(root, "t-bad");
    let srv = await server(body, { announce: body.length + 1 });
    await assert.rejects(fetchInto(spec(srv.port, file, body.length)), /announced 5242881 bytes for an object of 5242880/);
    srv.close();
    srv = await server(body);
    await assert.rejects(fetchInto(spec(srv.port, file, body.length, { token: "wrong" })), /answered 401/);
    srv.close();
    srv = await server(body, { cut: MiB });
    await assert.rejects(fetchInto(spec(srv.port, file, body.length, { stallMs: 20 })), /sent nothing|cut after/);
    srv.close();
    assert.equal(fs.existsSync(file), false);
  });

  it("into a reused, longer parked file: cut to size; a failed one removes the taken file", async () => {
    const srv = await server(body);
    const file = path.join(root, "t-reuse");
    fs.writeFileSync(file, Buffer.alloc(7 * MiB, 0xee));
    await fetchInto(spec(srv.port, file, body.length, { reuse: true }));
    assert.ok(fs.readFileSync(file).equals(body));
    srv.close();
    const cut = await server(body, { cut: MiB });
    fs.writeFileSync(file, Buffer.alloc(7 * MiB, 0xee));
    await assert.rejects(fetchInto(spec(cut.port, file, body.length, { reuse: true })));
    assert.equal(fs.existsSync(file), false);
    cut.close();
  });

  it("sendFile serves a file with large reads, and reports a file shorter than announced", async () => {
    const src = path.join(root, "t-src");
    fs.writeFileSync(src, body);
    const results: Array<Error | undefined> = [];
    const srv = http.createServer((req, res) => {
      const size = req.url === "/object/short" ? body.length + MiB : body.length;
      res.writeHead(200, { "content-length": String(size) });
      sendFile(res, fs.openSync(src, "r"), size, (e) => results.push(e));
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as any).port;
    const file = path.join(root, "t-dst");
    await fetchInto(spec(port, file, body.length, { token: "any" }));
    assert.ok(fs.readFileSync(file).equals(body));
    await assert.rejects(fetchInto(spec(port, path.join(root, "t-dst2"), body.length + MiB, { path: "/object/short" })));
    await until(() => results.length === 2, "both sends to end");
    assert.equal(results[0], undefined);
    assert.match(String(results[1]?.message), /holds 5242880 of 6291456 bytes/);
    srv.close();
  });
});
