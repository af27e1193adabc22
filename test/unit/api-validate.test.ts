// Validation of every message that enters an agent: head API requests (validateRequest) and
// driver/worker messages on the local socket (validateProcMessage).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MAX_BUNDLE_BYTES, apiOps, decodeApi, encodeApi, validateRequest } from "../../src/protocol/api.js";
import { validateProcMessage } from "../../src/protocol/local.js";

const HASH = "a".repeat(64);

describe("validateRequest (head API)", () => {
  it("accepts well-formed requests of every op", () => {
    const good: Record<string, object> = {
      ping: {},
      nodes: {},
      status: {},
      hasBundle: { hash: HASH },
      putBundle: { hash: HASH, data: new Uint8Array(3) },
      submitJob: { hash: HASH, entrypoint: "job.ts", args: ["1"], env: { A: "b" }, namespace: "ns", data: new Uint8Array(3), follow: true },
      listJobs: {},
      getJob: { id: "job-1" },
      jobLogs: { id: "job-1", fromSeq: 5, follow: true },
      unfollow: { id: "job-1" },
      stopJob: { id: "job-1" },
    };
    assert.deepEqual(Object.keys(good).sort(), Object.keys(apiOps).sort(), "every op is covered");
    for (const [op, args] of Object.entries(good)) assert.equal(validateRequest({ rid: 1, op, ...args }), undefined, op);
  });

  it("survives a msgpack round trip (bytes stay bytes)", () => {
    const back = decodeApi(encodeApi({ rid: 2, op: "putBundle", hash: HASH, data: new Uint8Array([1, 2, 3]) }));
    assert.equal(validateRequest(back), undefined);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ["a non-object", "ping", /request must be an object/],
    ["an array", [1, "ping"], /request must be an object/],
    ["null", null, /request must be an object/],
    ["no rid", { op: "ping" }, /no integer rid/],
    ["a string rid", { rid: "1", op: "ping" }, /no integer rid/],
    ["no op", { rid: 1 }, /request has no op/],
    ["an unknown op", { rid: 1, op: "rm -rf" }, /unknown op "rm -rf" \(known: ping/],
    ["a short hash", { rid: 1, op: "hasBundle", hash: "abc" }, /hasBundle: hash must be 64 hex characters/],
    ["upper-case hash", { rid: 1, op: "hasBundle", hash: "A".repeat(64) }, /hash must be 64 hex/],
    ["bundle data as a string", { rid: 1, op: "putBundle", hash: HASH, data: "code" }, /putBundle: data must be bytes/],
    ["args not strings", { rid: 1, op: "submitJob", hash: HASH, entrypoint: "j.ts", args: [1] }, /submitJob: args must be an array of strings/],
    ["env values not strings", { rid: 1, op: "submitJob", hash: HASH, entrypoint: "j.ts", args: [], env: { A: 1 } }, /env must be an object of strings/],
    ["submitted bundle data as a string", { rid: 1, op: "submitJob", hash: HASH, entrypoint: "j.ts", args: [], data: "code" }, /submitJob: data must be bytes/],
    ["submit's follow as a number", { rid: 1, op: "submitJob", hash: HASH, entrypoint: "j.ts", args: [], follow: 1 }, /submitJob: follow must be true or false/],
    ["env as an array", { rid: 1, op: "submitJob", hash: HASH, entrypoint: "j.ts", args: [], env: ["A=1"] }, /env must be an object of strings/],
    ["a numeric job id", { rid: 1, op: "getJob", id: 5 }, /getJob: id must be a string/],
    ["a huge id", { rid: 1, op: "getJob", id: "x".repeat(5000) }, /id must be a string/],
    ["a negative fromSeq", { rid: 1, op: "jobLogs", id: "j", fromSeq: -1 }, /fromSeq must be a non-negative integer/],
    ["follow as a string", { rid: 1, op: "jobLogs", id: "j", follow: "yes" }, /follow must be true or false/],
  ];
  for (const [what, req, msg] of bad) {
    it(`rejects ${what}`, () => {
      const p = validateRequest(req);
      assert.ok(p, "a problem is reported");
      assert.match(p!, msg);
    });
  }

  it("refuses bundles above the size limit", () => {
    const fake = { byteLength: MAX_BUNDLE_BYTES + 1 };
    Object.setPrototypeOf(fake, Uint8Array.prototype);
    assert.match(validateRequest({ rid: 1, op: "putBundle", hash: HASH, data: fake })!, /data is larger than/);
  });
});

describe("validateProcMessage (local socket)", () => {
  const tagged = { e: 0, d: new Uint8Array([0xc0]) };
  const loc = { e: 0, size: 10, path: "/dev/shm/x", node: "n" };
  const fn = { b: HASH, i: 0, n: "f" };

  it("accepts well-formed messages", () => {
    const good: unknown[] = [
      { t: "hello", role: "worker", pid: 1, workerId: "w" },
      { t: "submit", id: "a.1", fn, args: [{ v: tagged }, { ref: "a.0" }], res: { CPU: 1 }, o: {}, g: 0 },
      { t: "submit", id: "a.1", fn: { s: "() => 1", n: "f" }, args: [], res: {}, o: {}, g: 1 },
      { t: "createActor", id: "a.2", fn, args: [], res: {}, o: { name: "x" } },
      { t: "call", id: "a.3", actor: "a.2", m: "inc", args: [] },
      { t: "put", id: "a.4", v: tagged },
      { t: "seal", id: "a.5", loc },
      { t: "sub", ids: ["a"] },
      { t: "decref", ids: [] },
      { t: "done", id: "a.1", ms: 1, v: tagged },
      { t: "done", id: "a.1", ms: 1, loc },
      { t: "yield", id: "a.1", i: 0, v: tagged },
      { t: "blocked", returned: [] },
      { t: "unblocked" },
      { t: "cancel", id: "a.1", force: false, recursive: true },
      { t: "cancel", id: "a.1", force: true, recursive: true, worker: "w1" },
      { t: "cancelAck", id: "a.1", kill: true },
      { t: "kill", actor: "a.2", noRestart: true },
      { t: "getActor", rid: 1, name: "x", namespace: "default" },
      { t: "cluster", rid: 2, what: "available" },
      { t: "jobDone", ok: true },
      { t: "lease", rid: 3, res: { CPU: 1 } },
      { t: "lease", rid: 3, res: { CPU: 1 }, env: { GREETING: "hi", EMPTY: "" } },
      { t: "leaseSpread", rid: 4, res: { CPU: 1 }, b: HASH, n: 1, env: { GREETING: "hi" } },
    ];
    for (const m of good) assert.equal(validateProcMessage(m), undefined, JSON.stringify(m));
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ["a non-object", 42, /not an object with a string `t`/],
    ["no type", { id: "x" }, /not an object with a string `t`/],
    ["an unknown type", { t: "format-disk" }, /unknown message type "format-disk"/],
    ["a hello with a bad role", { t: "hello", role: "admin", pid: 1 }, /malformed "hello"/],
    ["a submit with a numeric id", { t: "submit", id: 1, fn, args: [], res: {}, o: {}, g: 0 }, /malformed "submit"/],
    ["a submit with a function lacking both index and source", { t: "submit", id: "a", fn: { n: "f" }, args: [], res: {}, o: {}, g: 0 }, /malformed "submit"/],
    ["a submit with negative resources", { t: "submit", id: "a", fn, args: [], res: { CPU: -1 }, o: {}, g: 0 }, /malformed "submit"/],
    ["a submit with NaN resources", { t: "submit", id: "a", fn, args: [], res: { CPU: NaN }, o: {}, g: 0 }, /malformed "submit"/],
    ["an argument that is neither value nor ref", { t: "call", id: "a", actor: "b", m: "x", args: [{ x: 1 }] }, /malformed "call"/],
    ["a put without bytes", { t: "put", id: "a", v: { e: 0 } }, /malformed "put"/],
    ["a seal without a path", { t: "seal", id: "a", loc: { e: 0, size: 1, node: "n" } }, /malformed "seal"/],
    ["ids that are not strings", { t: "decref", ids: [1, 2] }, /malformed "decref"/],
    ["a done with a string duration", { t: "done", id: "a", ms: "1" }, /malformed "done"/],
    ["a yield with neither value nor location", { t: "yield", id: "a", i: 0 }, /malformed "yield"/],
    ["a cluster query of an unknown kind", { t: "cluster", rid: 1, what: "secrets" }, /malformed "cluster"/],
    ["a jobDone without ok", { t: "jobDone" }, /malformed "jobDone"/],
    ["a cancelAck without kill", { t: "cancelAck", id: "a.1" }, /malformed "cancelAck"/],
    ["a lease whose environment holds a number", { t: "lease", rid: 1, res: {}, env: { N: 1 } }, /malformed "lease"/],
    ["a leaseSpread whose environment is a string", { t: "leaseSpread", rid: 1, res: {}, n: 1, env: "A=1" }, /malformed "leaseSpread"/],
  ];
  for (const [what, m, msg] of bad) {
    it(`rejects ${what}`, () => assert.match(validateProcMessage(m) ?? "(accepted)", msg));
  }
});
