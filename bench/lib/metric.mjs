// The one record every benchmark, limit and peer produces.
export function isMetric(x) {
  return (
    typeof x === "object" && x !== null &&
    typeof x.metric === "string" && x.metric !== "" &&
    typeof x.value === "number" && Number.isFinite(x.value) &&
    typeof x.unit === "string"
  );
}

/** JSON lines from a child's stdout; lines that are not metric records are returned apart. */
export function parseMetricLines(text) {
  const metrics = [];
  const other = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const x = JSON.parse(line);
      if (isMetric(x)) {
        metrics.push(x);
        continue;
      }
    } catch {
      // not JSON: kept as plain output below
    }
    other.push(line);
  }
  return { metrics, other };
}
