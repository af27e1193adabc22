// The pure part of `bench/run.mjs --compare`: which reference each tray metric is compared
// with, the targets of issue 6 (and issue 2), and the tables. No I/O here, so it is unit-tested.

/**
 * Ray's published single-client figures (64-core machine, from issue 6). Not measured here:
 * shown for orientation only, never used for a target.
 */
export const RAY_PUBLISHED = {
  single_client_tasks_sync: { value: 1000, unit: "tasks/s" },
  single_client_tasks_async: { value: 8000, unit: "tasks/s" },
  "1_1_actor_calls_sync": { value: 2000, unit: "calls/s" },
  "1_1_actor_calls_async": { value: 8700, unit: "calls/s" },
  single_client_put_calls: { value: 5000, unit: "calls/s" },
  single_client_get_calls: { value: 10600, unit: "calls/s" },
  single_client_put_gigabytes: { value: 20, unit: "GB/s" },
};

/** For each tray metric, the measured references beside it: `source:metric`. */
export const REFERENCES = {
  single_client_tasks_sync: ["limit:limit_unix_rtt_one_at_a_time", "piscina:tasks_sync", "dask:tasks_sync"],
  single_client_tasks_async: ["limit:limit_unix_rtt_pipelined", "piscina:tasks_async", "dask:tasks_async"],
  "1_1_actor_calls_sync": ["limit:limit_unix_rtt_one_at_a_time", "dask:actor_calls_sync"],
  "1_1_actor_calls_async": ["limit:limit_unix_rtt_pipelined", "dask:actor_calls_async"],
  n_n_actor_calls_async: ["limit:limit_unix_rtt_pipelined"],
  single_client_put_gigabytes: ["limit:limit_memcpy_warm", "piscina:put_gigabytes", "dask:put_gigabytes"],
  cross_node_transfer_gigabytes: ["limit:limit_unix_stream_100mb"],
  up_to_ready_s: ["piscina:pool_startup", "dask:cluster_startup"],
};

/**
 * Targets: `ref` + `factor` (tray >= factor x reference, "better" by the unit's direction),
 * or an absolute bound `atLeast` / `atMost` in the metric's own unit.
 */
export const TARGETS = [
  { metric: "single_client_tasks_async", ref: "piscina:tasks_async", factor: 1.5, issue: 6 },
  { metric: "single_client_tasks_async", ref: "dask:tasks_async", factor: 50, issue: 6 },
  { metric: "single_client_tasks_sync", ref: "limit:limit_unix_rtt_one_at_a_time", factor: 0.25, issue: 6 },
  { metric: "1_1_actor_calls_sync", ref: "limit:limit_unix_rtt_one_at_a_time", factor: 0.4, issue: 6 },
  { metric: "1_1_actor_calls_async", ref: "limit:limit_unix_rtt_pipelined", factor: 0.2, issue: 6 },
  { metric: "single_client_put_calls", atLeast: 100_000, issue: 6 },
  { metric: "single_client_get_calls", atLeast: 100_000, issue: 6 },
  { metric: "single_client_put_gigabytes", ref: "limit:limit_memcpy_warm", factor: 0.5, issue: 6 },
  { metric: "cross_node_transfer_gigabytes", ref: "limit:limit_unix_stream_100mb", factor: 0.6, issue: 6 },
  { metric: "queued_1m_tasks_agent_peak_mb", atMost: 2048, issue: 6 },
  { metric: "head_cpu_percent_3_nodes_100k_tasks", atMost: 10, issue: 6 },
  { metric: "up_to_ready_s", atMost: 1, issue: 6 },
  { metric: "submit_to_first_log_ms", atMost: 300, issue: 6 },
  { metric: "single_client_tasks_async", atLeast: 30_000, issue: 2 },
  { metric: "single_client_tasks_sync", atLeast: 8_000, issue: 2 },
];

const LOWER_IS_BETTER = new Set(["s", "ms", "us", "µs", "ms/task", "MB", "MiB", "%"]);

export function lowerIsBetter(unit) {
  return LOWER_IS_BETTER.has(unit);
}

/**
 * How many times better tray does than the reference: above 1 tray is ahead; against a
 * limit it is the fraction of the limit reached. Lower-is-better units are inverted.
 */
export function ratio(trayValue, refValue, unit) {
  if (!(trayValue > 0) || !(refValue > 0)) return undefined;
  return lowerIsBetter(unit) ? refValue / trayValue : trayValue / refValue;
}

/** sources: { limit: Metric[], piscina?: Metric[], dask?: Metric[], ... } -> value of "source:metric". */
export function lookup(sources, ref) {
  const i = ref.indexOf(":");
  const source = ref.slice(0, i);
  const name = ref.slice(i + 1);
  return sources[source]?.find((m) => m.metric === name);
}

/** One row per tray metric, with every reference that was measured (or published). */
export function compareRows(tray, sources) {
  return tray.map((m) => {
    const refs = {};
    for (const ref of REFERENCES[m.metric] ?? []) {
      const r = lookup(sources, ref);
      if (r) refs[ref] = { value: r.value, unit: r.unit, ratio: round3(ratio(m.value, r.value, m.unit)) };
    }
    const published = RAY_PUBLISHED[m.metric];
    if (published) refs[`ray_published:${m.metric}`] = { ...published, ratio: round3(ratio(m.value, published.value, m.unit)) };
    return { metric: m.metric, value: m.value, unit: m.unit, refs };
  });
}

/** Every target with pass / fail / missing (tray figure absent) / no-reference (peer not run). */
export function evaluateTargets(tray, sources, targets = TARGETS) {
  return targets.map((t) => {
    const need = describeNeed(t);
    const m = tray.find((x) => x.metric === t.metric);
    if (!m) return { ...t, need, status: "missing" };
    if (t.ref) {
      const r = lookup(sources, t.ref);
      if (!r) return { ...t, need, value: m.value, status: "no-reference" };
      const got = ratio(m.value, r.value, m.unit);
      return { ...t, need, value: m.value, refValue: r.value, ratio: round3(got), status: got !== undefined && got >= t.factor ? "pass" : "fail" };
    }
    const ok = t.atLeast !== undefined ? m.value >= t.atLeast : m.value <= t.atMost;
    return { ...t, need, value: m.value, status: ok ? "pass" : "fail" };
  });
}

function describeNeed(t) {
  if (t.ref) return `>= ${t.factor}x ${t.ref}`;
  // Exact: a bound is a number someone chose, not a measurement to round.
  return t.atLeast !== undefined ? `>= ${t.atLeast.toLocaleString("en-US")}` : `<= ${t.atMost.toLocaleString("en-US")}`;
}

function round3(x) {
  return x === undefined ? undefined : Number(x.toPrecision(3));
}

/** 23220 -> "23,200"; 7.739 -> "7.74"; 0.01234 -> "0.0123": three significant digits. */
export function formatNumber(x) {
  if (x === undefined || x === null || !Number.isFinite(x)) return "–";
  if (x === 0) return "0";
  const r = Number(x.toPrecision(3));
  return Math.abs(r) >= 1000 ? Math.round(r).toLocaleString("en-US") : String(r);
}

const COLUMNS = [
  { title: "limit", source: "limit" },
  { title: "Piscina", source: "piscina" },
  { title: "Dask", source: "dask" },
  { title: "Ray (published, 64 cores)", source: "ray_published" },
];

function cell(refs, source) {
  const entry = Object.entries(refs).find(([k]) => k.startsWith(`${source}:`));
  if (!entry) return "";
  const [ref, r] = entry;
  const name = source === "limit" ? ref.slice("limit:limit_".length) + " " : "";
  return `${name}${formatNumber(r.value)} ${r.unit} (${r.ratio === undefined ? "–" : `${r.ratio}×`})`;
}

/** Markdown tables: tray beside its references, the targets, then the raw limits and peers. */
export function renderTables({ rows, targets, sources, context, versions = {} }) {
  const out = [];
  if (context) out.push(`Measured ${context.date} on ${context.cpus} cores (${context.cpuModel}), Node ${context.node}, load average ${context.loadavg} at start.`, "");
  out.push("Ratios read \"times better than the reference\": above 1× tray is ahead; against a limit, the fraction of the limit reached.", "");
  out.push(`| metric | tray | ${COLUMNS.map((c) => c.title).join(" | ")} |`);
  out.push(`|---|---:|${COLUMNS.map(() => "---:").join("|")}|`);
  for (const r of rows) {
    out.push(`| ${r.metric} | ${formatNumber(r.value)} ${r.unit} | ${COLUMNS.map((c) => cell(r.refs, c.source)).join(" | ")} |`);
  }
  out.push("", "| target | from | needed | measured | result |", "|---|---|---|---:|---|");
  for (const t of targets) {
    const measured = t.status === "missing" ? "not measured" : t.ratio !== undefined ? `${t.ratio}×` : formatNumber(t.value);
    const result = { pass: "PASS", fail: "FAIL", missing: "–", "no-reference": "reference not run" }[t.status];
    out.push(`| ${t.metric} | issue ${t.issue} | ${t.need} | ${measured} | ${result} |`);
  }
  for (const [source, metrics] of Object.entries(sources)) {
    if (!metrics?.length) continue;
    out.push("", `| ${source}${versions[source] ? ` (${versions[source]})` : ""} | value |`, "|---|---:|");
    for (const m of metrics) out.push(`| ${m.metric} | ${formatNumber(m.value)} ${m.unit} |`);
  }
  return out.join("\n");
}

export const DOC_START = "<!-- bench:start -->";
export const DOC_END = "<!-- bench:end -->";

/** Puts `table` between the markers of `doc`, adding the markers at the end when absent. */
export function replaceBetweenMarkers(doc, table) {
  const block = `${DOC_START}\n${table}\n${DOC_END}`;
  const start = doc.indexOf(DOC_START);
  const end = doc.indexOf(DOC_END, start + DOC_START.length);
  if (start !== -1 && end !== -1) return doc.slice(0, start) + block + doc.slice(end + DOC_END.length);
  const base = doc.trim() === "" ? "# Performance\n" : doc.replace(/\n*$/, "\n");
  return `${base}\n## Latest figures (\`npm run bench -- --compare --write-docs\`)\n\n${block}\n`;
}
