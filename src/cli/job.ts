import type { Command } from "commander";
import { run } from "./command.js";
const jobsLib = () => import("../client/jobs.js");
import type { JobRecord } from "../protocol/api.js";

function when(ms?: number): string {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-";
}

function duration(j: JobRecord): string {
  if (!j.startedAt) return "-";
  return `${(((j.endedAt ?? Date.now()) - j.startedAt) / 1000).toFixed(1)}s`;
}

export function register(program: Command): void {
  const job = program.command("job").description("manage submitted jobs: list | status ID | logs ID [-f] | stop ID");
  job
    .command("list")
    .description("jobs of the cluster, newest first")
    .option("--cluster <name>")
    .option("--json", "JSON output")
    .addHelpText("after", "\nExample:\n  tray job list")
    .action(
      run(async (o: { cluster?: string; json?: boolean }) => {
        const jobs = await (await jobsLib()).listJobs(o.cluster);
        if (o.json) {
          process.stdout.write(JSON.stringify(jobs) + "\n");
          return;
        }
        if (!jobs.length) {
          process.stdout.write("No jobs yet: submit one with `tray submit job.ts`.\n");
          return;
        }
        const rows = jobs.map((j) => [j.id, j.status, j.entrypoint, when(j.submittedAt), duration(j), j.error ?? ""]);
        printTable(["ID", "STATUS", "ENTRYPOINT", "SUBMITTED", "DURATION", "ERROR"], rows);
      }),
    );
  job
    .command("status")
    .argument("<id>")
    .option("--cluster <name>")
    .option("--json", "JSON output")
    .description("status of one job")
    .addHelpText("after", "\nExample:\n  tray job status job-abc123")
    .action(
      run(async (id: string, o: { cluster?: string; json?: boolean }) => {
        const j = await (await jobsLib()).jobStatus(id, o.cluster);
        if (o.json) process.stdout.write(JSON.stringify(j) + "\n");
        else {
          process.stdout.write(
            `${j.id}: ${j.status}\n  entrypoint: ${j.entrypoint} ${j.args.join(" ")}\n  submitted: ${when(j.submittedAt)}  started: ${when(j.startedAt)}  ended: ${when(j.endedAt)}\n` +
              (j.error ? `  error: ${j.error}\n` : "") +
              (j.result !== undefined ? `  result: ${j.result}\n` : ""),
          );
        }
        return j.status === "FAILED" ? 1 : 0;
      }),
    );
  job
    .command("logs")
    .argument("<id>")
    .option("-f, --follow", "keep streaming until the job ends")
    .option("--cluster <name>")
    .description("print a job's logs")
    .addHelpText("after", "\nExample:\n  tray job logs job-abc123 -f")
    .action(run(async (id: string, o: { follow?: boolean; cluster?: string }) => (await jobsLib()).jobLogs(id, !!o.follow, o.cluster)));
  job
    .command("stop")
    .argument("<id>")
    .option("--cluster <name>")
    .description("stop a running job (its tasks and non-detached actors stop with it)")
    .addHelpText("after", "\nExample:\n  tray job stop job-abc123")
    .action(
      run(async (id: string, o: { cluster?: string }) => {
        const j = await (await jobsLib()).stopJob(id, o.cluster);
        process.stdout.write(j.status === "RUNNING" || j.status === "PENDING" ? `Stopping job ${id}.\n` : `Job ${id} already ended (${j.status}).\n`);
      }),
    );
}

export function printTable(head: string[], rows: string[][], out: NodeJS.WritableStream = process.stdout): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : (c ?? "").padEnd(widths[i]!))).join("  ").trimEnd() + "\n";
  out.write(line(head));
  for (const r of rows) out.write(line(r));
}
