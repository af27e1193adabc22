// GPU detection: `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`.
// CUDA_VISIBLE_DEVICES, when the agent itself was given one, limits what it may hand out.
import { execFileSync } from "node:child_process";

export interface GpuInfo {
  index: number;
  name: string;
  memoryMiB: number;
}

export function parseNvidiaSmi(text: string): GpuInfo[] {
  const out: GpuInfo[] = [];
  for (const line of text.split("\n")) {
    const cols = line.split(",").map((c) => c.trim());
    if (cols.length < 3 || !/^\d+$/.test(cols[0]!)) continue;
    out.push({ index: Number(cols[0]), name: cols[1]!, memoryMiB: Number(cols[2]) || 0 });
  }
  return out;
}

export function detectGpus(env: NodeJS.ProcessEnv = process.env): GpuInfo[] {
  let gpus: GpuInfo[];
  try {
    const text = execFileSync("nvidia-smi", ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"], {
      encoding: "utf8",
      timeout: 10_000,
      stdio: ["ignore", "pipe", "ignore"],
      env,
    });
    gpus = parseNvidiaSmi(text);
  } catch {
    return []; // no nvidia-smi, or no driver: a CPU-only node
  }
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined && visible !== "") {
    const allowed = new Set(visible.split(",").map((s) => s.trim()));
    gpus = gpus.filter((g) => allowed.has(String(g.index)));
  }
  return gpus;
}
