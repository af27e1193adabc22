// GPU check on a real machine: tray submit gpucheck.ts -- <real GPU count> <head|workers>
import { remote, get, kill, getRuntimeContext, clusterResources, availableResources, nodes } from "tray";
import { execFileSync } from "node:child_process";
import fs from "node:fs";

const TORCH = "import torch; print(torch.cuda.device_count(), torch.cuda.get_device_name(0)); x=torch.ones(1000,device='cuda'); print(float(x.sum()))";
const TORCH_COUNT = "import torch; print(torch.cuda.device_count())";

function sh(cmd: string, args: string[]) {
  const t0 = Date.now();
  try {
    const out = execFileSync(cmd, args, { encoding: "utf8", timeout: 120_000, stdio: ["ignore", "pipe", "pipe"] });
    return { ok: true, out: out.trim(), ms: Date.now() - t0 };
  } catch (e: any) {
    return { ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}${e.message}`.slice(-1500), ms: Date.now() - t0 };
  }
}
function view() {
  const c = getRuntimeContext();
  return { cvd: process.env.CUDA_VISIBLE_DEVICES ?? null, order: process.env.CUDA_DEVICE_ORDER ?? null, ids: c.gpuIds, node: c.nodeId, pid: process.pid };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function meet(dir: string, n: number) {
  fs.writeFileSync(`${dir}/${process.pid}-${Math.random()}`, "");
  const deadline = Date.now() + 30_000;
  while (fs.readdirSync(dir).length < n) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

const probe = remote(() => ({ ...view(), smiL: sh("nvidia-smi", ["-L"]), torch: sh("python3", ["-c", TORCH]) }), { numGpus: 1 });
const noGpu = remote(() => ({ ...view(), torch: sh("python3", ["-c", TORCH_COUNT]) }));
const hold = remote(async (ms: number) => {
  const start = Date.now();
  await sleep(ms);
  return { ...view(), start, end: Date.now() };
}, { numGpus: 1 });
const half = remote(async (dir: string) => {
  const met = await meet(dir, 2);
  return { ...view(), met, torch: sh("python3", ["-c", TORCH]) };
}, { numGpus: 0.5 });
const tinyGpu = remote(() => view(), { numGpus: 1 });
const tinyCpu = remote((i: number) => ({ i, cvd: process.env.CUDA_VISIBLE_DEVICES ?? null }));
const G = remote(class G { view() { return view(); } }, { numGpus: 1 });

const checks: { name: string; pass: boolean; detail: unknown }[] = [];
function check(name: string, pass: boolean, detail: unknown) {
  checks.push({ name, pass, detail });
  console.log(`${pass ? "PASS" : "FAIL"} ${name} ${JSON.stringify(detail)}`);
}
function maxOverlap(iv: { start: number; end: number }[]) {
  let best = 0;
  for (const a of iv) best = Math.max(best, iv.filter((b) => b.start < a.end && a.start < b.end).length);
  return best;
}

export default async function main(args: string[]) {
  const real = Number(args[0]);
  const mode = args[1] ?? "head";
  const cr = await clusterResources();
  const ns = await nodes();
  console.log("clusterResources", JSON.stringify(cr));
  console.log("nodes", JSON.stringify(ns));
  if (mode === "head") check("a: clusterResources().GPU equals the real GPU count", cr.GPU === real, { GPU: cr.GPU, real });
  else check("a(workers): clusterResources().GPU equals the real count with a worker agent beside the head", cr.GPU === real, { GPU: cr.GPU, real, perNode: ns.map((n: any) => n.resources?.GPU ?? n.Resources?.GPU) });

  const p = await get(probe.remote());
  console.log("probe", JSON.stringify(p, null, 1));
  const torchLines = p.torch.out.split("\n");
  check("b: numGpus 1 task: one GPU in CUDA_VISIBLE_DEVICES, gpuIds agree", /^\d+$/.test(p.cvd ?? "") && JSON.stringify(p.ids) === JSON.stringify([Number(p.cvd)]), { cvd: p.cvd, ids: p.ids });
  check("b: CUDA_DEVICE_ORDER=PCI_BUS_ID in a GPU task", p.order === "PCI_BUS_ID", { order: p.order });
  check("b: nvidia-smi -L inside the task", p.smiL.ok, p.smiL.out);
  check("b: torch in the task sees 1 device and computes on it", p.torch.ok && /^1 /.test(torchLines[0] ?? "") && torchLines[1] === "1000.0", { out: p.torch.out, ms: p.torch.ms });

  const n = await get(noGpu.remote());
  check("b0: a numGpus 0 task sees no GPU (CUDA_VISIBLE_DEVICES empty, torch counts 0)", (n.cvd === "" || n.cvd === null) && n.ids.length === 0 && n.torch.ok && n.torch.out.trim().endsWith("0"), { cvd: n.cvd, ids: n.ids, torch: n.torch.out, ms: n.torch.ms });

  const k = mode === "head" ? real + 1 : 2;
  const hs = await get(Array.from({ length: k }, () => hold.remote(1500)));
  const ov = maxOverlap(hs);
  if (mode === "head") check(`c: ${k} numGpus 1 tasks on ${real} GPU(s): at most ${real} at a time`, ov <= real, { maxOverlap: ov, tasks: hs.map((h: any) => ({ cvd: h.cvd, ids: h.ids, start: h.start - hs[0].start, end: h.end - hs[0].start })) });
  else check(`c(workers): two numGpus 1 tasks on ${real} GPU(s): at most ${real} at a time`, ov <= real, { maxOverlap: ov, tasks: hs.map((h: any) => ({ cvd: h.cvd, node: h.node, start: h.start - hs[0].start, end: h.end - hs[0].start })) });

  const dir = fs.mkdtempSync("/tmp/tray-gpucheck-");
  const [h1, h2] = await get([half.remote(dir), half.remote(dir)]);
  check("d: two numGpus 0.5 tasks run at the same time on the same GPU", mode !== "head" || h1.met && h2.met && h1.cvd === h2.cvd && /^\d+$/.test(h1.cvd ?? "") && h1.node === h2.node, { h1: { cvd: h1.cvd, ids: h1.ids, met: h1.met, node: h1.node }, h2: { cvd: h2.cvd, ids: h2.ids, met: h2.met, node: h2.node } });
  check("d: both halves ran torch on the shared GPU", h1.torch.ok && h2.torch.ok, { t1: h1.torch.out, t2: h2.torch.out });

  const a = G.remote();
  const v1 = await get(a.view.remote());
  const v2 = await get(a.view.remote());
  check("actor numGpus 1 keeps its GPU", /^\d+$/.test(v1.cvd ?? "") && v1.cvd === v2.cvd && JSON.stringify(v1.ids) === JSON.stringify([Number(v1.cvd)]), { v1, v2 });

  kill(a);
  let avail = await availableResources();
  for (let i = 0; i < 50 && avail.GPU !== cr.GPU; i++) { await sleep(100); avail = await availableResources(); }
  check("all GPU capacity returns once the actor is killed", avail.GPU === cr.GPU, { avail: avail.GPU, total: cr.GPU });

  // f: the direct path (leased workers, submitter backlog) carries CPU tasks only: a burst of
  // tiny CPU tasks beside tiny GPU tasks; every GPU task sees exactly one GPU, no CPU task any.
  {
    for (let i = 0; i < 50; i++) await get(tinyCpu.remote(i)); // measured tiny: leases, backlog
    const cpuRefs = Array.from({ length: 3000 }, (_, i) => tinyCpu.remote(i));
    const gpuRefs = Array.from({ length: 20 }, () => tinyGpu.remote());
    const [cpu, gpu] = await Promise.all([get(cpuRefs), get(gpuRefs)]);
    const cpuOk = cpu.every((r: any, i: number) => r.i === i && (r.cvd === "" || r.cvd === null));
    const gpuOk = gpu.every((g: any) => /^\d+$/.test(g.cvd ?? "") && JSON.stringify(g.ids) === JSON.stringify([Number(g.cvd)]));
    check("f: 3000 tiny CPU tasks beside 20 tiny numGpus 1 tasks: CPU ones see no GPU, GPU ones exactly theirs", cpuOk && gpuOk, { cpuOk, gpuOk, gpuSeen: [...new Set(gpu.map((g: any) => g.cvd))] });
  }

  if (mode === "head") {
    const too = remote(() => 1, { numGpus: real + 1 });
    const t0 = Date.now();
    try {
      await get(too.remote());
      check(`e: numGpus ${real + 1} on ${real} GPU(s) is infeasible`, false, "it ran");
    } catch (e: any) {
      check(`e: numGpus ${real + 1} on ${real} GPU(s) fails with InfeasibleTaskError`, e.name === "InfeasibleTaskError" && /GPU/.test(e.message), { name: e.name, msg: e.message, ms: Date.now() - t0 });
    }
  }
  const failed = checks.filter((c) => !c.pass);
  console.log(`SUMMARY ${mode}: ${checks.length - failed.length}/${checks.length} passed`);
  if (failed.length) throw new Error(`failed: ${failed.map((f) => f.name).join("; ")}`);
}
