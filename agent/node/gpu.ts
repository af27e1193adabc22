// GPU detection: `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`.
// CUDA_VISIBLE_DEVICES, when the agent itself was given one, limits what it may hand out; its
// entries may be indices or GPU UUIDs (whole or a unique prefix, as CUDA accepts them).
import { execFileSync } from "node:child_process";

export interface GpuInfo {
  index: number;
  name: string;
  memoryMiB: number;
  /** "GPU-…", when nvidia-smi reported it */
  uuid?: string;
}

const NVIDIA_SMI_ARGS = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"];

/** Rows of `index, uuid, name, memory` (or `index, name, memory`, the older query's answer). */
export function parseNvidiaSmi(text: string): GpuInfo[] {
  const out: GpuInfo[] = [];
  for (const line of text.split("\n")) {
    const cols = line.split(",").map((c) => c.trim());
    if (cols.length < 3 || !/^\d+$/.test(cols[0]!)) continue;
    const withUuid = cols.length >= 4 && /^GPU-/i.test(cols[1]!);
    // A GPU's name may itself hold a comma: everything between the fixed columns is the name.
    const name = cols.slice(withUuid ? 2 : 1, -1).join(", ");
    const gpu: GpuInfo = { index: Number(cols[0]), name, memoryMiB: Number(cols[cols.length - 1]) || 0 };
    if (withUuid) gpu.uuid = cols[1]!;
    out.push(gpu);
  }
  return out;
}

/** The GPUs a CUDA_VISIBLE_DEVICES value names (indices, or UUIDs and their unique prefixes). */
export function visibleGpus(gpus: GpuInfo[], visible: string | undefined): GpuInfo[] {
  if (visible === undefined || visible.trim() === "") return gpus;
  const picked: GpuInfo[] = [];
  for (const raw of visible.split(",")) {
    const e = raw.trim();
    let match: GpuInfo[] = [];
    if (/^\d+$/.test(e)) match = gpus.filter((g) => g.index === Number(e));
    else if (/^GPU-/i.test(e)) match = gpus.filter((g) => g.uuid?.toLowerCase().startsWith(e.toLowerCase()));
    // MIG-… slices and anything unknown match nothing: nvidia-smi's query lists whole GPUs only.
    if (match.length === 1 && !picked.includes(match[0]!)) picked.push(match[0]!);
  }
  return picked.sort((a, b) => a.index - b.index);
}

export function detectGpus(env: NodeJS.ProcessEnv = process.env): GpuInfo[] {
  let gpus: GpuInfo[];
  try {
    const text = execFileSync("nvidia-smi", NVIDIA_SMI_ARGS, {
      encoding: "utf8",
      timeout: 10_000,
      stdio: ["ignore", "pipe", "ignore"],
      env,
    });
    gpus = parseNvidiaSmi(text);
  } catch {
    return []; // no nvidia-smi, or no driver: a CPU-only node
  }
  return visibleGpus(gpus, env.CUDA_VISIBLE_DEVICES);
}
