// Types for metric.mjs (the bench is plain JS so `node bench/run.mjs` needs no build step).
export interface Metric {
  metric: string;
  value: number;
  unit: string;
}
export function isMetric(x: unknown): x is Metric;
export function parseMetricLines(text: string): { metrics: Metric[]; other: string[] };
