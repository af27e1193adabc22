// 1,000,000 no-op tasks queued at once on one node, then all results fetched and checked.
import { remote, get } from "tray";
import type { ObjectRef } from "tray";

const noop = remote((x: number) => x);

export default async function main(args: string[]) {
  const n = Number(args[0] ?? 1_000_000);
  const t0 = performance.now();
  const refs: ObjectRef<number>[] = new Array(n);
  for (let i = 0; i < n; i++) refs[i] = noop.remote(i);
  const submitted = performance.now() - t0;
  let sum = 0;
  // Fetched in slices so the driver's own memory stays modest; the agent holds the queue.
  for (let i = 0; i < n; i += 50_000) {
    const vals = await get(refs.slice(i, i + 50_000));
    for (const v of vals) sum += v;
  }
  const expected = (n * (n - 1)) / 2;
  if (sum !== expected) throw new Error(`sum of results ${sum} != ${expected}`);
  const s = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ metric: "queued_1m_tasks_per_s", value: n / s, unit: "tasks/s" }));
  console.log(JSON.stringify({ metric: "queued_1m_tasks_submit_s", value: submitted / 1000, unit: "s" }));
}
