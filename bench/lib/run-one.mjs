// Runs one tray benchmark module in its own process (so one benchmark's leftovers cannot skew
// the next) and prints its metrics as JSON lines. Usage: run-one.mjs FILE ONLY_JSON
import { basename } from "node:path";
import { pathToFileURL } from "node:url";
import { isMetric } from "./metric.mjs";
import { round } from "./stats.mjs";

const [file, onlyJson] = process.argv.slice(2);
const only = JSON.parse(onlyJson ?? "null");
const mod = await import(pathToFileURL(file).href);
const name = basename(file, ".mjs");
const declared = Array.isArray(mod.metrics) ? mod.metrics : [];

// Selected by module name: all its metrics. By metric name: only those (the module must declare them).
const byModule = !only || only.includes(name);
if (!byModule && !declared.some((m) => only.includes(m))) process.exit(0);
if (typeof mod.run !== "function") throw new Error(`${file} must export async function run()`);

const results = await mod.run({ only: byModule ? null : only });
if (!Array.isArray(results)) throw new Error(`${file}: run() must resolve to an array of {metric, value, unit}`);
for (const r of results) {
  if (!isMetric(r)) throw new Error(`${file}: run() returned ${JSON.stringify(r)}, not {metric, value, unit}`);
  if (byModule || only.includes(r.metric)) console.log(JSON.stringify({ metric: r.metric, value: round(r.value, 4), unit: r.unit }));
}
// Benchmarks may leave clients or timers open; the figures are out, so end here.
process.exit(0);
