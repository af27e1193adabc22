// A writer's mappings ahead of parked store files (src/runtime/write-mappings.ts): a process
// that keeps putting large objects writes them with one memcpy into pages it mapped before.
// What must hold: every byte right and no byte of an older object left readable, no write into
// a file this process did not win, no pages kept alive after the store let a file go.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { native } from "../../src/runtime/native.js";
import { BUSY_FILE, FREE_DIR, writeMappingsOf, writeObjectFile } from "../../src/runtime/recycle.js";
import { WriteMappings } from "../../src/runtime/write-mappings.js";
import { pattern, until } from "../helpers/bytes.js";

const MiB = 1024 * 1024;
const root = fs.mkdtempSync(path.join(fs.existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), "tray-writemaps-test-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let seq = 0;
/** A store folder with `n` parked files of `size` bytes, each full of 0xee. */
function storeWith(n: number, size: number): string {
  const dir = path.join(root, `s${++seq}`);
  fs.mkdirSync(path.join(dir, FREE_DIR), { recursive: true });
  for (let i = 1; i <= n; i++) fs.writeFileSync(path.join(dir, FREE_DIR, `${size}.${i}`), Buffer.alloc(size, 0xee));
  return dir;
}
const parked = (dir: string) => fs.readdirSync(path.join(dir, FREE_DIR)).sort();
const skip = native() ? false : "native helpers not built here";

describe("a writer's mappings ahead of parked files", () => {
  it("a worker or a one-off writer maps nothing; a driver that keeps writing maps ahead and writes through: every byte right, the file exactly the object's length", { skip }, () => {
    const dir = storeWith(4, 4 * MiB);
    const maps = writeMappingsOf(dir)!;
    const objects: Array<[string, Buffer]> = [];
    const write = (salt: number) => {
      const data = pattern(3 * MiB + 123, salt);
      const file = path.join(dir, `obj${salt}`);
      assert.ok(writeObjectFile(dir, file, data, true), "a parked file fits, so one is reused");
      objects.push([file, data]);
    };
    // A worker's writes (mapAhead false) never map: its large results are mostly read elsewhere.
    for (let i = 0; i < 3; i++) writeObjectFile(dir, path.join(dir, `worker${i}`), pattern(MiB + 5, i));
    assert.equal(maps.mappedCount, 0, "a worker's writes map nothing");
    write(1);
    assert.equal(maps.mappedCount, 0, "one large write is no habit");
    write(2);
    assert.equal(maps.mappedCount, 1, "the second write of the size maps a parked file ahead");
    assert.equal(maps.writesThrough, 0);
    write(3);
    assert.equal(maps.writesThrough, 1, "the third write takes the mapped file and copies into it");
    write(4);
    assert.equal(maps.writesThrough, 2);
    for (const [file, data] of objects) {
      assert.equal(fs.statSync(file).size, data.length, "cut to the object's length: nothing of the 4 MiB before is left");
      assert.ok(fs.readFileSync(file).equals(data), `${path.basename(file)} holds its bytes`);
    }
    maps.stop();
    assert.equal(maps.mappedCount, 0);
  });

  it("never writes into a file another process took; a file parked again (same inode, new name) is written through", { skip }, () => {
    const dir = storeWith(3, 2 * MiB);
    const maps = writeMappingsOf(dir)!;
    writeObjectFile(dir, path.join(dir, "a"), pattern(2 * MiB, 1), true);
    writeObjectFile(dir, path.join(dir, "b"), pattern(2 * MiB, 2), true);
    assert.equal(maps.mappedCount, 1);
    // Another process wins the mapped file (the one left) by rename and writes its object.
    const [mappedName] = parked(dir);
    const theirs = path.join(dir, "theirs");
    fs.renameSync(path.join(dir, FREE_DIR, mappedName!), theirs);
    const theirData = pattern(2 * MiB, 99);
    fs.writeFileSync(theirs, theirData);
    // Nothing parked is mapped now: this write goes by write(2) into a fresh file.
    const c = pattern(2 * MiB, 3);
    assert.equal(writeObjectFile(dir, path.join(dir, "c"), c, true), undefined);
    assert.equal(maps.writesThrough, 0);
    assert.ok(fs.readFileSync(theirs).equals(theirData), "their object is untouched");
    // Freed, their file is parked again under a new name: the next write takes it, mapped.
    fs.renameSync(theirs, path.join(dir, FREE_DIR, `${2 * MiB}.7`));
    writeObjectFile(dir, path.join(dir, "d"), pattern(2 * MiB, 4), true); // the scan after it sees the inode again
    const e = pattern(2 * MiB, 5);
    writeObjectFile(dir, path.join(dir, "e"), e, true);
    assert.ok(maps.writesThrough >= 1, "the inode parked again was written through");
    for (const [n, d] of [["c", c], ["e", e]] as const) assert.ok(fs.readFileSync(path.join(dir, n)).equals(d), n);
    maps.stop();
  });

  it("a file cut shorter than its parked name says is extended before the copy (touching past a file's end is a SIGBUS)", { skip }, () => {
    const dir = storeWith(3, 4 * MiB);
    const maps = writeMappingsOf(dir)!;
    writeObjectFile(dir, path.join(dir, "a"), pattern(4 * MiB, 1), true);
    writeObjectFile(dir, path.join(dir, "b"), pattern(4 * MiB, 2), true);
    const [mappedName] = parked(dir);
    fs.truncateSync(path.join(dir, FREE_DIR, mappedName!), MiB);
    const data = pattern(3 * MiB, 3);
    writeObjectFile(dir, path.join(dir, "c"), data, true);
    assert.equal(maps.writesThrough, 1);
    assert.equal(fs.statSync(path.join(dir, "c")).size, data.length);
    assert.ok(fs.readFileSync(path.join(dir, "c")).equals(data));
    maps.stop();
  });

  it("a parked file the store unlinks is unmapped soon (its pages are not kept alive)", { skip }, async () => {
    const dir = storeWith(3, 2 * MiB);
    const maps = writeMappingsOf(dir)!;
    writeObjectFile(dir, path.join(dir, "a"), pattern(2 * MiB, 1), true);
    writeObjectFile(dir, path.join(dir, "b"), pattern(2 * MiB, 2), true);
    assert.equal(maps.mappedCount, 1);
    for (const name of parked(dir)) fs.unlinkSync(path.join(dir, FREE_DIR, name));
    await until(() => maps.mappedCount === 0, "the mapping of the unlinked file to go", 5_000);
    maps.stop();
  });

  it("a writer that stops writing large objects lets every mapping go", { skip }, async () => {
    const dir = storeWith(3, 2 * MiB);
    let now = 1_000_000;
    const maps = new WriteMappings(path.join(dir, FREE_DIR), undefined, () => now);
    maps.wrote(2 * MiB);
    maps.wrote(2 * MiB);
    assert.equal(maps.mappedCount, 1);
    now += 60_000;
    await until(() => maps.mappedCount === 0, "the idle writer's mappings to go", 5_000);
  });

  it("a writer's warming ahead waits while the store marks a transfer running, then goes on", { skip }, async () => {
    const dir = storeWith(1, 16 * MiB);
    const busy = path.join(dir, BUSY_FILE);
    fs.writeFileSync(busy, "");
    const m = native()!.mapShared(path.join(dir, FREE_DIR, `${16 * MiB}.1`), 16 * MiB);
    let done = false;
    native()!.populate(m, 0, 16 * MiB, (err) => {
      assert.equal(err, null);
      done = true;
    }, busy);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(done, false, "no chunk is populated while the mark is there");
    fs.unlinkSync(busy);
    await until(() => done, "the populate to finish once the mark is gone", 5_000);
    native()!.unmap(m);
  });
});
