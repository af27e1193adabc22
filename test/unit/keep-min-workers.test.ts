import { test } from "node:test";
import assert from "node:assert/strict";
import { keptWorkers } from "../../src/launcher/remote.js";
import type { NodeState } from "../../src/launcher/state.js";

const node = (name: string, kind: "head" | "worker", nodeType: string): NodeState => ({ name, kind, nodeType, id: name });

test("--keep-min-workers keeps the lowest-numbered workers of each type, never the head", () => {
  const nodes = [
    node("c-head", "head", "head"),
    node("c-worker-10", "worker", "cpu"),
    node("c-worker-2", "worker", "cpu"),
    node("c-worker-1", "worker", "cpu"),
    node("c-gpu-1", "worker", "gpu"),
    node("c-gpu-2", "worker", "gpu"),
  ];
  assert.deepEqual(keptWorkers(nodes, { cpu: 2, gpu: 1, head: 0 }).map((n) => n.name).sort(), ["c-gpu-1", "c-worker-1", "c-worker-2"]);
  assert.deepEqual(keptWorkers(nodes, { cpu: 0 }), []);
  assert.deepEqual(keptWorkers(nodes, undefined), []);
});
