// Drives a real local cluster through the CLI, the way a user does, for tray's benchmarks:
//
//   const c = await startLocalCluster();          // tray up, timed -> c.upSeconds
//   const { metrics } = await c.submit("bench/jobs/microbenchmark.ts", ["--seconds", "1"]);
//   const ms = await c.firstLogMs();               // tray submit to the job's first line
//   await c.down();
//
// Each cluster gets its own TRAY_HOME, so a benchmark never touches the user's clusters.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseMetricLines } from "./metric.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLI = join(ROOT, "bin", "tray.js");

function runCli(args, env, { onLine } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    let partial = "";
    child.stdout.on("data", (d) => {
      out += d;
      if (!onLine) return;
      const lines = (partial + d).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) onLine(l);
    });
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`tray ${args.join(" ")} exited with ${code}:\n${err.trim()}\n${out.trim()}`));
    });
  });
}

export async function startLocalCluster({ config = join(ROOT, "cluster-configs", "local.yaml") } = {}) {
  const home = mkdtempSync(join(tmpdir(), "tray-bench-home-"));
  const env = { ...process.env, TRAY_HOME: home };
  const t0 = performance.now();
  await runCli(["up", config, "-y"], env);
  const upSeconds = (performance.now() - t0) / 1000;

  return {
    home,
    upSeconds,
    /** Runs a job to its end; metrics are its JSON lines, the rest of stdout is `other`. */
    async submit(job, args = []) {
      const out = await runCli(["submit", join(ROOT, job), "--", ...args], env);
      return parseMetricLines(out);
    },
    /** From starting `tray submit` to the job's first output line on our stdout. */
    async firstLogMs(job = "bench/jobs/first-log.ts") {
      const t = performance.now();
      let at;
      await runCli(["submit", join(ROOT, job)], env, {
        onLine: (l) => {
          if (at === undefined && l.includes("first-log")) at = performance.now() - t;
        },
      });
      if (at === undefined) throw new Error(`${job} printed no "first-log" line`);
      return at;
    },
    async down() {
      try {
        await runCli(["down", config, "-y"], env);
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    },
  };
}
