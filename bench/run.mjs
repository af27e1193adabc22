#!/usr/bin/env node
// tray's benchmarks, and with --compare the machine's limits and the peers beside them.
//
//   node bench/run.mjs                       # tray's benchmarks: one JSON line per metric
//   node bench/run.mjs --only single_client_tasks_sync,micro
//   node bench/run.mjs --compare             # + limits, Piscina, Dask (when installed): ratios, targets, table
//   node bench/run.mjs --compare --write-docs   # + the table into docs/performance.md
//   node bench/run.mjs --compare --peers piscina   # skip Dask (it takes minutes)
//
// A tray benchmark is a module bench/tray/NAME.mjs exporting `async run({only})` that resolves
// to [{metric, value, unit}], and optionally `metrics` (the names it produces, so --only can
// select it by metric). Each runs in its own process. --tray-dir DIR reads them from elsewhere;
// --docs-file FILE writes the table somewhere other than docs/performance.md.
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { compareRows, evaluateTargets, renderTables, replaceBetweenMarkers } from "./lib/compare.mjs";
import { parseMetricLines } from "./lib/metric.mjs";
import { installPeerDependencies, peerAvailability, runPeer } from "./lib/peers.mjs";

const BENCH = fileURLToPath(new URL(".", import.meta.url));
const ROOT = join(BENCH, "..");
const DOCS = join(ROOT, "docs", "performance.md");

const { values: opts } = parseArgs({
  options: {
    compare: { type: "boolean", default: false },
    "write-docs": { type: "boolean", default: false },
    only: { type: "string" },
    peers: { type: "string", default: "piscina,dask" },
    "tray-dir": { type: "string", default: join(BENCH, "tray") },
    "docs-file": { type: "string", default: DOCS },
    json: { type: "boolean", default: false },
    timeout: { type: "string", default: "600" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (opts.help) {
  const lines = readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1);
  console.log(lines.slice(0, lines.findIndex((l) => !l.startsWith("//"))).map((l) => l.replace(/^\/\/ ?/, "")).join("\n"));
  process.exit(0);
}
const only = opts.only ? opts.only.split(",").map((s) => s.trim()).filter(Boolean) : null;
const log = (line) => process.stderr.write(`${line}\n`);
const emit = (record) => console.log(JSON.stringify(record));
let failed = false;

/** Runs a command, streaming stderr, and resolves to its stdout. */
function runChild(cmd, args, label) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const timer = setTimeout(() => {
      log(`${label}: still running after ${opts.timeout} s; stopped`);
      child.kill("SIGKILL");
    }, Number(opts.timeout) * 1000);
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => process.stderr.write(d));
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code !== 0) {
        log(`${label}: exited with code ${code}`);
        failed = true;
      }
      resolve(out);
    });
  });
}

async function runTray() {
  const dir = opts["tray-dir"];
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".mjs")).sort() : [];
  if (files.length === 0) log("no tray benchmarks yet (bench/tray/*.mjs)");
  const all = [];
  for (const f of files) {
    const out = await runChild(process.execPath, ["--expose-gc", join(BENCH, "lib", "run-one.mjs"), join(dir, f), JSON.stringify(only)], join(dir, f));
    const { metrics, other } = parseMetricLines(out);
    for (const line of other) log(`[${f}] ${line}`);
    for (const m of metrics) emit(m);
    all.push(...metrics);
  }
  return all;
}

async function runLimits() {
  const out = await runChild(process.execPath, ["--expose-gc", join(BENCH, "limits.mjs")], "bench/limits.mjs");
  const { metrics } = parseMetricLines(out);
  for (const m of metrics) emit({ source: "limit", ...m });
  return metrics;
}

async function runPeers() {
  const wanted = opts.peers.split(",").map((s) => s.trim()).filter(Boolean);
  const available = peerAvailability();
  const results = {};
  const versions = {};
  for (const name of wanted) {
    const a = available[name];
    if (!a) {
      log(`unknown peer ${name} (known: ${Object.keys(available).join(", ")})`);
      continue;
    }
    if (!a.ok) {
      log(`skipping ${name}: ${a.why}`);
      continue;
    }
    try {
      if (a.install) installPeerDependencies(log);
      log(`running peer ${name}...`);
      const { metrics, comments } = await runPeer(name, log);
      for (const c of comments) log(`[${name}] ${c}`);
      if (comments[0]) versions[name] = comments[0]; // the scripts' first comment names the versions
      for (const m of metrics) emit({ source: name, ...m });
      results[name] = metrics;
    } catch (e) {
      log(`peer ${name} failed: ${e.message}`);
      failed = true;
    }
  }
  return { results, versions };
}

function machineContext() {
  const c = cpus();
  return {
    date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    cpus: c.length,
    cpuModel: c[0]?.model.trim() ?? "unknown CPU",
    node: process.version,
    loadavg: loadavg().map((x) => x.toFixed(2)).join(" "),
  };
}

const context = machineContext();
// Limits first, on a machine that is as quiet as this run will ever make it.
const limits = opts.compare ? await runLimits() : [];
const tray = await runTray();
if (opts.compare) {
  const peers = await runPeers();
  const sources = { limit: limits, ...peers.results };
  const rows = compareRows(tray, sources);
  const targets = evaluateTargets(tray, sources);
  for (const r of rows) emit({ metric: r.metric, value: r.value, unit: r.unit, vs: r.refs });
  for (const t of targets) emit({ target: `${t.metric} ${t.need}`, issue: t.issue, status: t.status, value: t.value, ...(t.ratio !== undefined ? { ratio: t.ratio } : {}) });
  const table = renderTables({ rows, targets, sources, context, versions: peers.versions });
  if (!opts.json) console.log(`\n${table}\n`);
  if (opts["write-docs"]) {
    const docs = opts["docs-file"];
    writeFileSync(docs, replaceBetweenMarkers(existsSync(docs) ? readFileSync(docs, "utf8") : "", table));
    log(`wrote the table into ${docs}`);
  }
}
process.exit(failed ? 1 : 0);
