// Resource arithmetic of a node: fits/feasible, exact fractional sums, GPU picking.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { add, describe as describeRes, feasible, fits, pickGpus, returnGpus, subtract, takeGpus } from "../../agent/node/resources.js";

describe("fits and feasible", () => {
  it("checks every demanded resource against what is available", () => {
    const avail = { CPU: 2, memory: 1000, custom: 1 };
    assert.equal(fits(avail, { CPU: 2 }), true);
    assert.equal(fits(avail, { CPU: 2.5 }), false);
    assert.equal(fits(avail, { CPU: 1, custom: 1 }), true);
    assert.equal(fits(avail, { custom: 2 }), false);
    assert.equal(fits(avail, { memory: 1001 }), false);
    assert.equal(fits(avail, {}), true, "an empty demand always fits");
  });

  it("treats a resource the node does not have as zero", () => {
    assert.equal(fits({ CPU: 4 }, { GPU: 1 }), false);
    assert.equal(fits({ CPU: 4 }, { GPU: 0 }), true);
    assert.equal(feasible({ CPU: 4 }, { accelerator_v5: 0.5 }), false);
    assert.equal(feasible({ CPU: 4, accelerator_v5: 1 }, { accelerator_v5: 0.5 }), true);
  });
});

describe("add and subtract", () => {
  it("keep fractional amounts exact (0.1 + 0.2 style sums)", () => {
    const avail = { GPU: 1 };
    for (let i = 0; i < 10; i++) subtract(avail, { GPU: 0.1 });
    assert.equal(avail.GPU, 0, "ten 0.1 GPUs use exactly one GPU");
    assert.equal(fits(avail, { GPU: 0.0001 }), false);
    for (let i = 0; i < 3; i++) add(avail, { GPU: 0.1 });
    assert.equal(avail.GPU, 0.3);
    assert.equal(fits(avail, { GPU: 0.3 }), true);
    subtract(avail, { GPU: 0.25 });
    add(avail, { GPU: 0.25 });
    assert.equal(avail.GPU, 0.3);
  });

  it("subtract creates missing keys and add restores them", () => {
    const avail: Record<string, number> = { CPU: 2 };
    subtract(avail, { CPU: 1, custom: 0 });
    assert.deepEqual(avail, { CPU: 1, custom: 0 });
    add(avail, { CPU: 1 });
    assert.equal(avail.CPU, 2);
  });
});

describe("describe", () => {
  it("writes a demand as users read it", () => {
    assert.equal(describeRes({ CPU: 4, GPU: 1 }), "{CPU: 4, GPU: 1}");
    assert.equal(describeRes({}), "{}");
  });
});

describe("pickGpus", () => {
  it("gives whole GPUs lowest id first, only fully free ones", () => {
    assert.deepEqual(pickGpus([1, 1, 1, 1], 2), [0, 1]);
    assert.deepEqual(pickGpus([0.5, 1, 0, 1], 2), [1, 3]);
    assert.equal(pickGpus([0.5, 1, 0, 0.75], 2), undefined);
    assert.deepEqual(pickGpus([1, 1], 0), []);
  });

  it("packs fractional demands onto the fullest GPU that still has room", () => {
    assert.deepEqual(pickGpus([1, 0.5], 0.5), [1], "the half-used GPU, keeping GPU 0 whole");
    assert.deepEqual(pickGpus([1, 0.25], 0.5), [0], "GPU 1 has too little left");
    assert.equal(pickGpus([0.25, 0.25], 0.5), undefined);
  });

  it("two 0.5 demands share one GPU, a third goes to the next", () => {
    const free = [1, 1];
    const a = pickGpus(free, 0.5)!;
    takeGpus(free, a, 0.5);
    const b = pickGpus(free, 0.5)!;
    takeGpus(free, b, 0.5);
    assert.deepEqual(a, b, "both halves on the same GPU");
    assert.deepEqual(free[a[0]!], 0);
    const c = pickGpus(free, 0.5)!;
    assert.notDeepEqual(c, a);
    takeGpus(free, c, 0.5);
    assert.equal(pickGpus(free, 1), undefined, "no whole GPU left");
    returnGpus(free, a, 0.5);
    returnGpus(free, b, 0.5);
    assert.deepEqual(pickGpus(free, 1), a, "the GPU is whole again once both halves are back");
  });

  it("takeGpus/returnGpus move whole GPUs for demands >= 1", () => {
    const free = [1, 1, 1];
    const ids = pickGpus(free, 2)!;
    takeGpus(free, ids, 2);
    assert.deepEqual(free, [0, 0, 1]);
    returnGpus(free, ids, 2);
    assert.deepEqual(free, [1, 1, 1]);
  });
});
