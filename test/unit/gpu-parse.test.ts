// GPU detection: nvidia-smi's CSV output, and detectGpus with a fake nvidia-smi on PATH.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it, after } from "node:test";
import { detectGpus, parseNvidiaSmi, visibleGpus } from "../../agent/node/gpu.js";

// What `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits` prints
// (the query before UUIDs were asked for; its answer still parses).
const TWO_H100 = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n";
// The same machine asked `--query-gpu=index,uuid,name,memory.total`.
const TWO_H100_UUID =
  "0, GPU-5e0b6a1c-1111-2222-3333-444455556666, NVIDIA H100 80GB HBM3, 81559\n1, GPU-9f3c7d2e-aaaa-bbbb-cccc-ddddeeeeffff, NVIDIA H100 80GB HBM3, 81559\n";

// Captured byte for byte on a real machine (an H200, driver 580.159.04, Ubuntu 24.04 in a VM,
// MIG disabled), 2026-11-26: one GPU, no CUDA_VISIBLE_DEVICES; `nvidia-smi -L` said
// "GPU 0: NVIDIA H200 (UUID: GPU-14e98dc8-5831-1c29-ebc0-83958ef15f98)".
const REAL_H200 = "0, NVIDIA H200, 143771\n";
// A second H200 the same day, asked the current query (index,uuid,name,memory.total).
const REAL_H200_UUID = "0, GPU-4a4c67cd-d55d-fc97-4a77-a4c3ad954ead, NVIDIA H200, 143771\n";
// An H100 (Firecracker VM, driver 580.159.04), a later session: a name with spaces and digits.
const REAL_H100_UUID = "0, GPU-48e6a1b7-316c-dbe2-c112-089f6ee31111, NVIDIA H100 80GB HBM3, 81559\n";

describe("parseNvidiaSmi", () => {
  it("reads the output captured on a real H200", () => {
    assert.deepEqual(parseNvidiaSmi(REAL_H200), [{ index: 0, name: "NVIDIA H200", memoryMiB: 143771 }]);
  });

  it("reads the current query's answer captured on a real H100", () => {
    assert.deepEqual(parseNvidiaSmi(REAL_H100_UUID), [{ index: 0, name: "NVIDIA H100 80GB HBM3", memoryMiB: 81559, uuid: "GPU-48e6a1b7-316c-dbe2-c112-089f6ee31111" }]);
    assert.deepEqual(visibleGpus(parseNvidiaSmi(REAL_H100_UUID), "GPU-48e6a1b7").map((g) => g.index), [0]);
    assert.deepEqual(visibleGpus(parseNvidiaSmi(REAL_H100_UUID), "MIG-48e6a1b7"), []);
  });

  it("reads the current query's answer captured on a real H200", () => {
    assert.deepEqual(parseNvidiaSmi(REAL_H200_UUID), [{ index: 0, name: "NVIDIA H200", memoryMiB: 143771, uuid: "GPU-4a4c67cd-d55d-fc97-4a77-a4c3ad954ead" }]);
    assert.deepEqual(visibleGpus(parseNvidiaSmi(REAL_H200_UUID), "GPU-4a4c67cd").map((g) => g.index), [0]);
  });

  it("reads the UUID column of the current query", () => {
    assert.deepEqual(parseNvidiaSmi(TWO_H100_UUID), [
      { index: 0, name: "NVIDIA H100 80GB HBM3", memoryMiB: 81559, uuid: "GPU-5e0b6a1c-1111-2222-3333-444455556666" },
      { index: 1, name: "NVIDIA H100 80GB HBM3", memoryMiB: 81559, uuid: "GPU-9f3c7d2e-aaaa-bbbb-cccc-ddddeeeeffff" },
    ]);
  });

  it("keeps a comma inside a GPU's name", () => {
    assert.deepEqual(parseNvidiaSmi("0, GPU-abc, Weird, Card, 1024\n"), [{ index: 0, name: "Weird, Card", memoryMiB: 1024, uuid: "GPU-abc" }]);
  });

  it("reads index, name and memory of each GPU", () => {
    assert.deepEqual(parseNvidiaSmi(TWO_H100), [
      { index: 0, name: "NVIDIA H100 80GB HBM3", memoryMiB: 81559 },
      { index: 1, name: "NVIDIA H100 80GB HBM3", memoryMiB: 81559 },
    ]);
  });

  it("tolerates CRLF line ends, blank lines and [N/A] memory", () => {
    assert.deepEqual(parseNvidiaSmi("\r\n0, Tesla T4, 15360\r\n\r\n3, NVIDIA A10G, [N/A]\r\n"), [
      { index: 0, name: "Tesla T4", memoryMiB: 15360 },
      { index: 3, name: "NVIDIA A10G", memoryMiB: 0 },
    ]);
  });

  it("ignores error text (no driver) instead of inventing GPUs", () => {
    assert.deepEqual(
      parseNvidiaSmi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n"),
      [],
    );
    assert.deepEqual(parseNvidiaSmi(""), []);
  });
});

describe("detectGpus", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-fake-smi-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const fake = (body: string) => {
    fs.writeFileSync(path.join(dir, "nvidia-smi"), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return { ...process.env, PATH: `${dir}:${process.env.PATH}`, CUDA_VISIBLE_DEVICES: "" };
  };

  it("runs nvidia-smi with the query flags and parses its answer", () => {
    const env = fake(`echo "$@" > ${dir}/args; printf '${TWO_H100.replace(/\n/g, "\\n")}'`);
    const gpus = detectGpus(env);
    assert.deepEqual(gpus.map((g) => g.index), [0, 1]);
    assert.equal(fs.readFileSync(path.join(dir, "args"), "utf8").trim(), "--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits");
  });

  it("detects the real H200's answer through nvidia-smi", () => {
    const env = fake(`printf '${REAL_H200.replace(/\n/g, "\\n")}'`);
    assert.deepEqual(detectGpus(env), [{ index: 0, name: "NVIDIA H200", memoryMiB: 143771 }]);
  });

  it("names GPUs in CUDA_VISIBLE_DEVICES by index, UUID or unique UUID prefix; MIG slices and unknowns match none", () => {
    const gpus = parseNvidiaSmi(TWO_H100_UUID);
    const idx = (v: string) => visibleGpus(gpus, v).map((g) => g.index);
    assert.deepEqual(idx("GPU-9f3c7d2e-aaaa-bbbb-cccc-ddddeeeeffff"), [1]);
    assert.deepEqual(idx("gpu-9F3C"), [1]);
    assert.deepEqual(idx("GPU-, 0"), [0]); // "GPU-" is the prefix of both: ambiguous, as for CUDA
    assert.deepEqual(idx("GPU-5e0b,1,1"), [0, 1]);
    assert.deepEqual(idx("MIG-5e0b6a1c-1111-2222-3333-444455556666"), []);
    assert.deepEqual(idx("-1"), []);
    assert.deepEqual(idx(""), [0, 1]);
  });

  it("keeps only the GPUs named in CUDA_VISIBLE_DEVICES when set", () => {
    const env = fake(`printf '0, A, 1\\n1, B, 1\\n2, C, 1\\n'`);
    assert.deepEqual(detectGpus({ ...env, CUDA_VISIBLE_DEVICES: "2,0" }).map((g) => g.name), ["A", "C"]);
  });

  it("gives no GPUs when nvidia-smi fails or is missing", () => {
    const env = fake(`echo "NVIDIA-SMI has failed" >&2; exit 9`);
    assert.deepEqual(detectGpus(env), []);
    assert.deepEqual(detectGpus({ ...process.env, PATH: "/nonexistent" }), []);
  });
});
