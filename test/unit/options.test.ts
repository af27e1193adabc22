// remote() options: validated up front with exact messages; the demand a task reserves.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { demandOf, validateOptions } from "../../src/runtime/options.js";

describe("validateOptions", () => {
  it("accepts the options of the contract", () => {
    const o = { numCpus: 0.5, numGpus: 0.25, memory: 1e9, resources: { custom: 1 }, maxRetries: 2, retryExceptions: true, runtimeEnv: { env: { A: "1" } } };
    assert.equal(validateOptions(o, "task"), o);
    const a = { maxRestarts: -1, maxTaskRetries: 1, maxConcurrency: 4, name: "x", namespace: "ns", lifetime: "detached" as const, getIfExists: true };
    assert.equal(validateOptions(a, "actor"), a);
    assert.deepEqual(validateOptions(undefined, "task"), {});
  });

  const bad: Array<[string, unknown, "task" | "actor", RegExp]> = [
    ["unknown option", { numCPUs: 1 }, "task", /remote\(\) has no option "numCPUs" \(known: numCpus/],
    ["negative numCpus", { numCpus: -1 }, "task", /option numCpus must be a non-negative number, got -1/],
    ["string numGpus", { numGpus: "1" }, "task", /option numGpus must be a non-negative number, got "1"/],
    ["NaN memory", { memory: NaN }, "task", /option memory must be a non-negative number/],
    ["fractional maxRetries", { maxRetries: 1.5 }, "task", /option maxRetries must be an integer >= 0 \(or -1 for unlimited\), got 1.5/],
    ["maxRestarts -2", { maxRestarts: -2 }, "actor", /option maxRestarts must be an integer >= 0/],
    ["fractional GPUs above 1", { numGpus: 1.5 }, "task", /numGpus must be a whole number when above 1, got 1.5/],
    ["negative custom resource", { resources: { custom: -1 } }, "task", /option resources.custom must be a non-negative number/],
    ["CPU in resources", { resources: { CPU: 1 } }, "task", /use numCpus\/numGpus instead of resources.CPU/],
    ["maxConcurrency 0", { maxConcurrency: 0 }, "actor", /option maxConcurrency must be an integer >= 1, got 0/],
    ["maxConcurrency 1.5", { maxConcurrency: 1.5 }, "actor", /option maxConcurrency must be an integer >= 1, got 1.5/],
    ["actor option on a task", { name: "x" }, "task", /option name applies to actors, not to functions/],
    ["task option on an actor", { maxRetries: 1 }, "actor", /maxRetries\/retryExceptions apply to functions; for actors use maxRestarts and maxTaskRetries/],
    ["bad lifetime", { lifetime: "forever" }, "actor", /option lifetime must be "detached"/],
    ["detached without a name", { lifetime: "detached" }, "actor", /a detached actor needs a name/],
    ["bad strategy", { schedulingStrategy: "PACK" }, "task", /schedulingStrategy must be "DEFAULT", "SPREAD"/],
    ["non-string env", { runtimeEnv: { env: { A: 1 } } }, "task", /runtimeEnv.env.A must be a string/],
    ["NaN custom resource", { resources: { custom: NaN } }, "task", /option resources.custom must be a non-negative number/],
    ["infinite custom resource", { resources: { custom: Infinity } }, "task", /option resources.custom must be a non-negative number/],
    ["resources not an object", { resources: 3 }, "task", /option resources must be an object of \{ name: amount \}, got 3/],
    ["non-boolean retryExceptions", { retryExceptions: "yes" }, "task", /option retryExceptions must be true or false, got "yes"/],
    ["numeric actor name", { name: 5 }, "actor", /option name must be a non-empty string, got 5/],
    ["empty namespace", { name: "a", namespace: "" }, "actor", /option namespace must be a non-empty string/],
    ["not an object", 5, "task", /remote\(\) options must be an object/],
  ];
  for (const [what, o, kind, msg] of bad) {
    it(`rejects ${what} with a sentence naming it`, () => {
      assert.throws(() => validateOptions(o as any, kind), (e: Error) => e instanceof TypeError && msg.test(e.message));
    });
  }
});

describe("demandOf", () => {
  it("tasks take 1 CPU by default, actors 0", () => {
    assert.deepEqual(demandOf({}, "task"), { CPU: 1 });
    assert.deepEqual(demandOf({}, "actor"), {});
  });

  it("collects CPU, GPU, memory and custom resources, leaving zeros out", () => {
    assert.deepEqual(demandOf({ numCpus: 0, numGpus: 0.5, memory: 100, resources: { custom: 2, zero: 0 } }, "task"), { GPU: 0.5, memory: 100, custom: 2 });
    assert.deepEqual(demandOf({ numCpus: 2, numGpus: 1 }, "actor"), { CPU: 2, GPU: 1 });
  });
});
