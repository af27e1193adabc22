// The pure parts of the benchmark harness: reading peers' output, ratios, targets, tables.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  DOC_END,
  DOC_START,
  compareRows,
  evaluateTargets,
  formatNumber,
  ratio,
  renderTables,
  replaceBetweenMarkers,
} from "../../bench/lib/compare.mjs";
import { parseMetricLines } from "../../bench/lib/metric.mjs";
import { parsePeerOutput } from "../../bench/lib/peers.mjs";

describe("peer output", () => {
  it("reads `name value unit` lines and keeps comments and stray lines apart", () => {
    const out = "# piscina 5.3.2 node v20.20.2\npool_startup 0.042 s\ntasks_sync 19590.3 tasks/s\n\nput_gigabytes 5.363 GB/s\nWARNING something\n";
    assert.deepEqual(parsePeerOutput(out), {
      metrics: [
        { metric: "pool_startup", value: 0.042, unit: "s" },
        { metric: "tasks_sync", value: 19590.3, unit: "tasks/s" },
        { metric: "put_gigabytes", value: 5.363, unit: "GB/s" },
      ],
      comments: ["piscina 5.3.2 node v20.20.2"],
      unparsed: ["WARNING something"],
    });
  });

  it("reads JSON metric lines from tray's benchmarks and limits", () => {
    const { metrics, other } = parseMetricLines('{"metric":"a","value":1,"unit":"x"}\nhello\n{"metric":"b","value":"2","unit":"x"}\n');
    assert.deepEqual(metrics, [{ metric: "a", value: 1, unit: "x" }]);
    assert.deepEqual(other, ["hello", '{"metric":"b","value":"2","unit":"x"}']);
  });
});

describe("ratios", () => {
  it("reads as times better, inverted for times", () => {
    assert.equal(ratio(300, 100, "tasks/s"), 3);
    assert.equal(ratio(0.5, 2, "s"), 4);
    assert.equal(ratio(0, 2, "tasks/s"), undefined);
  });

  it("formats three significant digits", () => {
    assert.equal(formatNumber(23220), "23,200");
    assert.equal(formatNumber(7.739), "7.74");
    assert.equal(formatNumber(0.012345), "0.0123");
    assert.equal(formatNumber(undefined), "–");
  });
});

const sources = {
  limit: [
    { metric: "limit_unix_rtt_one_at_a_time", value: 40000, unit: "msg/s" },
    { metric: "limit_unix_rtt_pipelined", value: 400000, unit: "msg/s" },
    { metric: "limit_memcpy_warm", value: 8, unit: "GB/s" },
  ],
  piscina: [
    { metric: "tasks_sync", value: 20000, unit: "tasks/s" },
    { metric: "tasks_async", value: 30000, unit: "tasks/s" },
    { metric: "pool_startup", value: 0.05, unit: "s" },
  ],
};
const tray = [
  { metric: "single_client_tasks_sync", value: 12000, unit: "tasks/s" },
  { metric: "single_client_tasks_async", value: 60000, unit: "tasks/s" },
  { metric: "single_client_put_gigabytes", value: 3, unit: "GB/s" },
  { metric: "up_to_ready_s", value: 0.5, unit: "s" },
  { metric: "submit_to_first_log_ms", value: 120, unit: "ms" },
];

describe("comparison", () => {
  it("puts every measured and published reference beside a tray figure", () => {
    const [sync] = compareRows(tray, sources);
    assert.deepEqual(sync!.refs, {
      "limit:limit_unix_rtt_one_at_a_time": { value: 40000, unit: "msg/s", ratio: 0.3 },
      "piscina:tasks_sync": { value: 20000, unit: "tasks/s", ratio: 0.6 },
      "ray_published:single_client_tasks_sync": { value: 1000, unit: "tasks/s", ratio: 12 },
    });
  });

  it("evaluates targets: pass, fail, missing figure, reference not run", () => {
    const results = evaluateTargets(tray, sources);
    const status = (metric: string, need: string) => results.find((r) => r.metric === metric && r.need === need)?.status;
    assert.equal(status("single_client_tasks_async", ">= 1.5x piscina:tasks_async"), "pass"); // 2x
    assert.equal(status("single_client_tasks_async", ">= 50x dask:tasks_async"), "no-reference");
    assert.equal(status("single_client_tasks_sync", ">= 0.25x limit:limit_unix_rtt_one_at_a_time"), "pass"); // 0.3
    assert.equal(status("single_client_put_gigabytes", ">= 0.5x limit:limit_memcpy_warm"), "fail"); // 0.375
    assert.equal(status("single_client_put_calls", ">= 100,000"), "missing");
    assert.equal(status("up_to_ready_s", "<= 1"), "pass");
    assert.equal(status("submit_to_first_log_ms", "<= 300"), "pass");
    assert.equal(status("queued_1m_tasks_agent_peak_mb", "<= 2,048"), "missing");
  });

  it("renders the tables with pass/fail per target", () => {
    const rows = compareRows(tray, sources);
    const table = renderTables({ rows, targets: evaluateTargets(tray, sources), sources, versions: { piscina: "piscina 5.3.2" } });
    assert.match(table, /\| single_client_tasks_sync \| 12,000 tasks\/s \| unix_rtt_one_at_a_time 40,000 msg\/s \(0\.3×\) \| 20,000 tasks\/s \(0\.6×\) \|  \| 1,000 tasks\/s \(12×\) \|/);
    assert.match(table, /\| single_client_put_gigabytes \| issue 6 \| >= 0\.5x limit:limit_memcpy_warm \| 0\.375× \| FAIL \|/);
    assert.match(table, /\| single_client_get_calls \| issue 6 \| >= 100,000 \| not measured \| – \|/);
    assert.match(table, /\| piscina \(piscina 5\.3\.2\) \| value \|/);
  });
});

describe("docs", () => {
  it("replaces only what is between the markers", () => {
    const doc = `# Performance\n\nintro\n\n${DOC_START}\nold\n${DOC_END}\n\nhow it works\n`;
    assert.equal(replaceBetweenMarkers(doc, "new"), `# Performance\n\nintro\n\n${DOC_START}\nnew\n${DOC_END}\n\nhow it works\n`);
  });

  it("adds the markers at the end when the page has none", () => {
    const out = replaceBetweenMarkers("# Performance\n\nintro\n", "T");
    assert.ok(out.startsWith("# Performance\n\nintro\n"));
    assert.ok(out.endsWith(`${DOC_START}\nT\n${DOC_END}\n`));
    assert.ok(replaceBetweenMarkers("", "T").startsWith("# Performance\n"));
  });
});
