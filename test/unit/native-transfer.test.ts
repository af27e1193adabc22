// tray's native helpers (native/tray_native.cc) and the paths built on them: mapped reads of
// stored objects (pins, copy-on-write), sendfile(2) from the holder, a transfer received into
// a mapping of the store file, and the store never recycling a file somebody still maps.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import v8 from "node:v8";
import vm from "node:vm";
import { ObjectStore } from "../../agent/node/store.js";
import { fetchInto, hostKey, parseRange, sameHostSocket, serveObjectFile } from "../../agent/node/transfer.js";
import { native, socketFd, type SharedMapping } from "../../src/runtime/native.js";
import { FREE_DIR, PIN_DIR, isPinned, mapStoredFile, sweepPins } from "../../src/runtime/recycle.js";
import { pattern, until } from "../helpers/bytes.js";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

const MiB = 1024 * 1024;
const root = fs.mkdtempSync(path.join(fs.existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), "tray-native-test-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let seq = 0;
const freshStore = (capacity = 1024 * MiB) => {
  const dir = path.join(root, `s${++seq}`);
  return new ObjectStore(dir, path.join(dir, "spill"), capacity);
};
const pins = (dir: string) => fs.readdirSync(path.join(dir, PIN_DIR));

const compilerHere = process.platform === "linux" && spawnSync(process.env.CXX || "g++", ["--version"]).status === 0;

describe("native helpers", () => {
  it("are built and loaded wherever a C++ compiler is (as on CI); TRAY_NATIVE=0 turns them off", () => {
    if (compilerHere) assert.ok(native(), "g++ is here but dist/tray_native.node did not load: `npm run build` should have built it");
    const off = spawnSync(process.execPath, ["--import", "tsx", "-e", `import("${path.resolve("src/runtime/native.ts")}").then((m) => console.log(String(m.native() === undefined)))`], {
      env: { ...process.env, TRAY_NATIVE: "0" },
      encoding: "utf8",
    });
    assert.equal(off.stdout.trim(), "true", off.stderr);
  });

  const nat = native();
  const skip = nat ? false : "native helpers not built here";

  it("a mapped read sees the file, and writing to it never changes the file (private pages)", { skip }, () => {
    const f = path.join(root, "m0");
    const data = pattern(3 * MiB + 123);
    fs.writeFileSync(f, data);
    const ab = nat!.map(f, data.length, 0);
    const v = new Uint8Array(ab);
    assert.equal(v.length, data.length);
    assert.ok(Buffer.from(ab).equals(data));
    v.fill(0xab, 0, 5 * 4096);
    assert.ok(fs.readFileSync(f).equals(data), "the store's file changed under a write to a read value");
    nat!.unmap(ab);
    assert.equal(ab.byteLength, 0, "unmap detaches: later access throws instead of faulting");
    nat!.unmap(ab); // twice: a no-op
  });

  it("a shared mapping (a transfer's destination) writes through to the file; populate faults a slice in", { skip }, async () => {
    const f = path.join(root, "m1");
    fs.writeFileSync(f, Buffer.alloc(2 * MiB));
    const ab = nat!.map(f, 2 * MiB, 1);
    await new Promise<void>((res, rej) => nat!.populate(ab, MiB, MiB, (e) => (e ? rej(e) : res())));
    const data = pattern(2 * MiB, 7);
    new Uint8Array(ab).set(data);
    assert.throws(() => nat!.populate(ab, MiB, 2 * MiB, () => {}), TypeError, "a slice past the end");
    nat!.unmap(ab);
    assert.throws(() => nat!.populate(ab, 0, MiB, () => {}), /not a live mapping|within the buffer/);
    assert.ok(fs.readFileSync(f).equals(data));
  });

  it("an agent's shared mapping is a handle, not an ArrayBuffer: copyInto and populate write through, unmap ends it", { skip }, async () => {
    const f = path.join(root, "m3");
    fs.writeFileSync(f, Buffer.alloc(2 * MiB));
    const h = nat!.mapShared(f, 2 * MiB);
    assert.equal(h instanceof ArrayBuffer, false, "V8 must not count it as the agent's memory");
    assert.equal(nat!.mappingSize(h), 2 * MiB);
    await new Promise<void>((res, rej) => nat!.populate(h, 0, MiB, (e) => (e ? rej(e) : res())));
    const data = pattern(MiB, 5);
    nat!.copyInto(h, MiB, data);
    assert.throws(() => nat!.copyInto(h, MiB + 1, data), TypeError, "a copy past the end");
    assert.throws(() => nat!.populate(h, MiB, 2 * MiB, () => {}), TypeError, "a slice past the end");
    assert.ok(fs.readFileSync(f).subarray(MiB).equals(data));
    nat!.unmap(h, true);
    nat!.unmap(h); // twice: nothing happens
    assert.throws(() => nat!.mappingSize(h), /not a live mapping/);
    assert.throws(() => nat!.copyInto(h, 0, data), TypeError);
    assert.throws(() => nat!.populate(h, 0, MiB, () => {}), /not a live mapping/);
    assert.throws(() => nat!.recvInto(0, h, 0, 1, 0, () => {}), TypeError);
    assert.throws(() => nat!.mapShared(path.join(root, "nope"), MiB), (e: any) => e.code === "ENOENT");
  });

  it("a missing file is an error with code ENOENT, bad arguments a TypeError, not a crash", { skip }, () => {
    const f = path.join(root, "m2");
    fs.writeFileSync(f, pattern(MiB, 3));
    assert.throws(() => nat!.map(path.join(root, "nope"), MiB, 0), (e: any) => e.code === "ENOENT");
    assert.throws(() => nat!.map(f, 0, 0), TypeError);
    assert.throws(() => (nat as any).sendFile(-1, f, 0, 1, 0, () => {}), TypeError);
    const ab = nat!.map(f, MiB, 1);
    nat!.unmap(ab, true); // in the background: detached at once
    assert.equal(ab.byteLength, 0);
  });

  it("sendFile streams a file into a socket; a file shorter than promised and a peer that leaves are errors", { skip }, async () => {
    const f = path.join(root, "s0");
    const data = pattern(9 * MiB + 5, 11);
    fs.writeFileSync(f, data);
    const results: Array<[string | null, number]> = [];
    const server = net.createServer((s) => {
      s.on("error", () => {}); // the peer that leaves resets the connection
      s.once("data", (req) => {
        const len = String(req) === "short" ? data.length + MiB : String(req) === "leave" ? data.length : data.length;
        nat!.sendFile(socketFd(s)!, f, 0, len, 2000, (err, sent) => {
          results.push([err ? err.message : null, sent]);
          s.end();
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    const fetchAll = (req: string, stopAfter = Infinity) =>
      new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        let n = 0;
        const c = net.connect(port, "127.0.0.1", () => c.write(req));
        c.on("data", (d) => {
          chunks.push(d);
          n += d.length;
          if (n >= stopAfter) c.destroy();
        });
        c.on("close", () => resolve(Buffer.concat(chunks)));
      });
    assert.ok((await fetchAll("whole")).equals(data));
    assert.equal((await fetchAll("short")).length, data.length);
    await fetchAll("leave", MiB);
    await until(() => results.length === 3, "three sends to end");
    assert.deepEqual(results[0], [null, data.length]);
    assert.match(String(results[1]![0]), /Input\/output error/);
    assert.equal(results[1]![1], data.length);
    assert.ok(results[2]![0], "a peer that left mid-stream must be an error");
    assert.ok(results[2]![1] < data.length);
    server.close();
  });
});

describe("pins: the store never recycles a file somebody maps", () => {
  const skip = native() ? false : "native helpers not built here";

  it("a mapped read pins its file; freed while pinned it is unlinked, not parked; the pin goes with the mapping", { skip }, async () => {
    const s = freshStore();
    const file = path.join(s.dir, "obj1");
    const data = pattern(2 * MiB, 1);
    fs.writeFileSync(file, data);
    s.add("obj1", { e: 1, size: data.length, path: file, node: "n" });
    let ab: ArrayBuffer | undefined = mapStoredFile(file, data.length)!;
    assert.ok(ab);
    assert.equal(pins(s.dir).length, 1);
    assert.ok(isPinned(file));
    s.free("obj1", { e: 1, size: data.length, path: file, node: "n" });
    assert.deepEqual(fs.readdirSync(path.join(s.dir, FREE_DIR)), [], "a mapped file was parked for reuse");
    await until(() => !fs.existsSync(file), "the freed file to go");
    assert.ok(Buffer.from(ab).equals(data), "the reader's value changed");
    ab = undefined;
    for (let i = 0; i < 20 && pins(s.dir).length; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(pins(s.dir), [], "the pin outlived its mapping");
    s.destroy();
  });

  it("an unpinned freed file is parked as before; small objects are read, not mapped", { skip }, () => {
    const s = freshStore();
    const file = path.join(s.dir, "obj2");
    fs.writeFileSync(file, pattern(2 * MiB));
    s.add("obj3", { e: 1, size: 2 * MiB, path: file, node: "n" });
    s.free("obj3", { e: 1, size: 2 * MiB, path: file, node: "n" });
    assert.equal(fs.readdirSync(path.join(s.dir, FREE_DIR)).length, 1);
    const small = path.join(s.dir, "small");
    fs.writeFileSync(small, "x".repeat(1000));
    assert.equal(mapStoredFile(small, 1000), undefined);
    s.destroy();
  });

  it("a spilled file (no pins folder) is mapped without a pin; a vanished one fails with ENOENT", { skip }, () => {
    const s = freshStore();
    const f = path.join(s.spillDir, "sp");
    fs.writeFileSync(f, pattern(2 * MiB, 5));
    const ab = mapStoredFile(f, 2 * MiB)!;
    assert.ok(Buffer.from(ab).equals(pattern(2 * MiB, 5)));
    assert.deepEqual(pins(s.dir), []);
    assert.throws(() => mapStoredFile(path.join(s.dir, "gone"), 2 * MiB), (e: any) => e.code === "ENOENT");
    assert.deepEqual(pins(s.dir), [], "a failed map left its pin");
    s.destroy();
  });

  it("pins of processes that are gone are swept; live ones stay", () => {
    const dir = path.join(root, "sweep");
    fs.mkdirSync(path.join(dir, PIN_DIR), { recursive: true });
    const dead = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" }).stdout.trim();
    for (const n of [`${process.pid}.1`, `${dead}.1`, `${dead}.2`, "junk"]) fs.writeFileSync(path.join(dir, PIN_DIR, n), "");
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    assert.equal(sweepPins(dir, alive), 3);
    assert.deepEqual(pins(dir), [`${process.pid}.1`]);
  });
});

/** An object server like an agent's peer port: serveObjectFile behind the token check. */
async function objectServer(file: string, size: number, listenOn: string | number) {
  const sent: Array<Error | undefined> = [];
  const srv = http.createServer((req, res) => {
    if (req.headers.authorization !== "Bearer tok") return void res.writeHead(401).end("no\n");
    try {
      serveObjectFile(req, res, file, size, 2000, (e) => sent.push(e));
    } catch (e) {
      res.writeHead(404).end(String(e));
    }
  });
  await new Promise<void>((r) => (typeof listenOn === "string" ? srv.listen(listenOn, r) : srv.listen(0, "127.0.0.1", r)));
  return { port: typeof listenOn === "string" ? 0 : (srv.address() as net.AddressInfo).port, sent, close: () => srv.close() };
}

describe("object transfer with the native helpers", () => {
  const nat = native();
  const skip = nat ? false : "native helpers not built here";
  const spec = (port: number, file: string, size: number, extra: Partial<Parameters<typeof fetchInto>[0]> = {}) => ({
    host: "127.0.0.1", port, path: "/object/x", token: "tok", file, size, reuse: false, stallMs: 5000, peer: "A", ...extra,
  });

  /** A parked-style file of `size` bytes of 0xee, and its shared mapping (as the store keeps it). */
  const warmFile = (name: string, size: number) => {
    const file = path.join(root, name);
    fs.writeFileSync(file, Buffer.alloc(size, 0xee));
    return { file, mapping: nat!.mapShared(file, size) };
  };
  const unmapped = (m: SharedMapping) => {
    try {
      nat!.mappingSize(m);
      return false;
    } catch {
      return true;
    }
  };

  it("sendfile at the holder, into a premade mapping or a plain file, over TCP and a Unix socket: every byte lands; the holder's pin goes after", { skip }, async () => {
    const s = freshStore();
    const src = path.join(s.dir, "src");
    const body = pattern(13 * MiB + 77, 21);
    fs.writeFileSync(src, body);
    const sock = path.join(root, "obj.sock");
    for (const at of [0, sock] as const) {
      const srv = await objectServer(src, body.length, at);
      const where = typeof at === "string" ? { unixPath: at } : {};
      const w = warmFile(`dst-${typeof at}`, 16 * MiB);
      await fetchInto(spec(srv.port, w.file, body.length, { ...where, reuse: true, mapping: w.mapping }));
      assert.equal(fs.statSync(w.file).size, body.length, "a reused file is cut to the object's size");
      assert.ok(fs.readFileSync(w.file).equals(body), `bytes differ (${typeof at === "string" ? "unix" : "tcp"}, mapped)`);
      await until(() => unmapped(w.mapping), "the mapping to be unmapped");
      const plain = path.join(root, `plain-${typeof at}`);
      await fetchInto(spec(srv.port, plain, body.length, where));
      assert.ok(fs.readFileSync(plain).equals(body), "bytes differ (plain file)");
      await until(() => srv.sent.length === 2, "both sends to end");
      assert.deepEqual(srv.sent, [undefined, undefined]);
      assert.deepEqual(pins(s.dir), [], "the holder's pin stayed");
      srv.close();
    }
    s.destroy();
  });

  it("a premade mapping that cannot take the object is refused (a bug), not written past", { skip }, async () => {
    const w = warmFile("small", MiB);
    await assert.rejects(fetchInto(spec(1, w.file, 2 * MiB, { reuse: true, mapping: w.mapping })), /bug: a premade mapping/);
    nat!.unmap(w.mapping);
  });

  it("a cut transfer, a wrong token or a wrong size into a mapped file remove it and fail with a sentence", { skip }, async () => {
    const body = pattern(4 * MiB, 9);
    const cutter = http.createServer((req, res) => {
      res.writeHead(200, { "content-length": String(req.url === "/object/size" ? body.length + 1 : body.length) });
      if (req.url === "/object/size") return void res.end(body);
      res.write(body.subarray(0, MiB), () => setTimeout(() => res.destroy(), 50));
    });
    await new Promise<void>((r) => cutter.listen(0, "127.0.0.1", r));
    const port = (cutter.address() as net.AddressInfo).port;
    let w = warmFile("cut", 5 * MiB);
    await assert.rejects(fetchInto(spec(port, w.file, body.length, { reuse: true, mapping: w.mapping })), /cut after \d+ of 4194304 bytes/);
    assert.equal(fs.existsSync(w.file), false, "half an object was left in the store");
    w = warmFile("cut", 5 * MiB);
    await assert.rejects(fetchInto(spec(port, w.file, body.length, { path: "/object/size", reuse: true, mapping: w.mapping })), /announced 4194305 bytes/);
    assert.equal(fs.existsSync(w.file), false);
    cutter.close();
    const src = path.join(root, "src3");
    fs.writeFileSync(src, body);
    const srv = await objectServer(src, body.length, 0);
    w = warmFile("cut", 5 * MiB);
    await assert.rejects(fetchInto(spec(srv.port, w.file, body.length, { token: "wrong", reuse: true, mapping: w.mapping })), /answered 401/);
    assert.equal(fs.existsSync(w.file), false);
    srv.close();
  });

  it("a big object comes in parallel ranges, each byte once, whatever the size's remainder", { skip }, async () => {
    for (const size of [16 * MiB, 16 * MiB + 1, 21 * MiB + 4095, 33 * MiB + 3]) {
      const src = path.join(root, `rsrc-${size}`);
      const body = pattern(size, size & 0xffff);
      fs.writeFileSync(src, body);
      const srv = await objectServer(src, size, 0);
      const w = warmFile(`rdst-${size}`, size + MiB);
      await fetchInto(spec(srv.port, w.file, size, { reuse: true, mapping: w.mapping }));
      assert.ok(fs.readFileSync(w.file).equals(body), `bytes differ at size ${size}`);
      await until(() => srv.sent.length >= 2, "the ranges to be sent");
      assert.ok(srv.sent.every((e) => e === undefined));
      srv.close();
    }
  });

  it("ranges: parsed strictly; one outside the object is answered 416; one range of a file is served alone", { skip }, async () => {
    assert.deepEqual(parseRange(undefined, 10), undefined);
    assert.deepEqual(parseRange("bytes=0-9", 10), [0, 10]);
    assert.deepEqual(parseRange("bytes=3-3", 10), [3, 1]);
    for (const bad of ["bytes=0-10", "bytes=5-4", "bytes=-5", "bytes=0-", "items=0-1", "bytes=0-1,3-4"]) assert.equal(parseRange(bad, 10), null, bad);
    const src = path.join(root, "range-src");
    const body = pattern(3 * MiB, 77);
    fs.writeFileSync(src, body);
    const srv = await objectServer(src, body.length, 0);
    const get = (range: string) =>
      new Promise<{ status: number; body: Buffer; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
        http.get({ host: "127.0.0.1", port: srv.port, path: "/object/x", headers: { authorization: "Bearer tok", range } }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (d) => chunks.push(d));
          res.on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), headers: res.headers }));
        }).on("error", reject);
      });
    const part = await get(`bytes=${MiB + 5}-${2 * MiB + 9}`);
    assert.equal(part.status, 206);
    assert.equal(part.headers["content-range"], `bytes ${MiB + 5}-${2 * MiB + 9}/${body.length}`);
    assert.ok(part.body.equals(body.subarray(MiB + 5, 2 * MiB + 10)));
    const bad = await get(`bytes=0-${body.length}`);
    assert.equal(bad.status, 416);
    srv.close();
  });

  it("a range that is cut fails the whole object and removes its file; the other range's reads end first", { skip }, async () => {
    const size = 20 * MiB;
    const body = pattern(size, 5);
    const srv = http.createServer((req, res) => {
      const [a, b] = parseRange(req.headers.range, size) ?? [0, size];
      res.writeHead(206, { "content-length": String(b) });
      if (a === 0) return void res.end(body.subarray(a, a + b));
      res.write(body.subarray(a, a + MiB), () => setTimeout(() => res.destroy(), 50)); // the second range is cut
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const w = warmFile("rcut", size);
    await assert.rejects(fetchInto(spec((srv.address() as net.AddressInfo).port, w.file, size, { reuse: true, mapping: w.mapping })), /was cut after \d+ of \d+ bytes \(bytes \d+- of 20971520\)/);
    assert.equal(fs.existsSync(w.file), false, "half an object was left in the store");
    await until(() => unmapped(w.mapping), "the mapping to be unmapped once no range reads");
    srv.close();
  });

  it("a holder whose file is gone answers 404, which the fetcher reports", { skip }, async () => {
    const srv = await objectServer(path.join(root, "never-there"), 2 * MiB, 0);
    await assert.rejects(fetchInto(spec(srv.port, path.join(root, "x404"), 2 * MiB)), /answered 404/);
    srv.close();
  });

  it("same-host peers use the object socket only with the same host key and an existing socket", () => {
    const sock = path.join(root, "exists.sock");
    fs.writeFileSync(sock, "");
    const me = { hostKey: hostKey() } as any;
    assert.equal(sameHostSocket(me, { objSock: sock, hostKey: hostKey() } as any), sock);
    assert.equal(sameHostSocket(me, { objSock: sock, hostKey: "other/host" } as any), undefined);
    assert.equal(sameHostSocket(me, { objSock: path.join(root, "missing.sock"), hostKey: hostKey() } as any), undefined);
    assert.equal(sameHostSocket(me, { hostKey: hostKey() } as any), undefined);
  });
});

describe("the store maps its big parked files ahead", () => {
  const skip = native() ? false : "native helpers not built here";
  it("a warm file made by pre-faulting, and a freed big file, come with a mapping a transfer can take", { skip }, async () => {
    const s = freshStore();
    const file = path.join(s.dir, "big");
    fs.writeFileSync(file, pattern(9 * MiB));
    s.add("big", { e: 1, size: 9 * MiB, path: file, node: "n" }); // ≥ 8 MiB: pre-faults its class
    await until(() => fs.readdirSync(path.join(s.dir, FREE_DIR)).length === 2, "two warm files");
    const warm = fs.readdirSync(path.join(s.dir, FREE_DIR));
    await until(() => warm.every((n) => (s as any).warmMaps.has(n)), "their mappings");
    s.free("big", { e: 1, size: 9 * MiB, path: file, node: "n" });
    const freed = `${9 * MiB}.3`;
    await until(() => (s as any).warmMaps.has(freed), "the freed file's mapping");
    const ab = s.takeWarmMapping(freed)!;
    assert.equal(native()!.mappingSize(ab), 9 * MiB);
    assert.equal(s.takeWarmMapping(freed), undefined, "a mapping handed out twice");
    native()!.unmap(ab);
    s.destroy();
    for (const n of warm) assert.equal(((s as any).warmMaps as Map<string, SharedMapping>).has(n), false);
  });
});
