// Small helpers for runtime tests that submit jobs through the real CLI.
import assert from "node:assert/strict";
import fs from "node:fs";
import type { CliResult } from "./cluster.js";

/** The job printed one JSON line last (console.log(JSON.stringify(...))): parse it. */
export function lastJson<T = any>(r: CliResult): T {
  const lines = r.stdout.trim().split("\n").filter((l) => l.startsWith("{") || l.startsWith("["));
  assert.ok(lines.length, `the job printed no JSON line; stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return JSON.parse(lines[lines.length - 1]!);
}

/** Assert the job succeeded and return its last JSON line. */
export function okJson<T = any>(r: CliResult): T {
  assert.equal(r.code, 0, `the job failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  return lastJson<T>(r);
}

/** The job id `tray submit` announced. */
export function jobIdOf(r: CliResult): string {
  const m = /job (job-[a-z0-9]+) submitted/.exec(r.stderr);
  assert.ok(m, `no job id in: ${r.stderr}`);
  return m[1]!;
}

/** Infeasible tasks fail after this grace (the agent reads it when `tray up` starts it). */
process.env.TRAY_INFEASIBLE_GRACE_MS ??= "1500";

/** True when the process is gone, or a zombie its parent has not reaped yet (it runs nothing). */
export function pidGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}
