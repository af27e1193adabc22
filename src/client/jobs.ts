// Job commands as library functions: submit (bundle, upload once per hash, run, stream
// logs), list, status, logs, stop. The CLI only parses arguments and calls these.
import path from "node:path";
import { bundleJob } from "../bundle/index.js";
import { connectCluster } from "./connect.js";
import { ApiError } from "./head-client.js";
import { UserError } from "../errors.js";
import type { JobRecord, LogLine } from "../protocol/api.js";

export interface SubmitOptions {
  entry: string;
  args: string[];
  cluster?: string;
  wait: boolean;
  env?: Record<string, string>;
  namespace?: string;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

function printLine(l: LogLine, out: NodeJS.WritableStream, err: NodeJS.WritableStream): void {
  (l.stream === "stderr" ? err : out).write(l.line + "\n");
}

/** Returns the exit code: 0 when the job succeeded (or was only submitted), 1 otherwise. */
export async function submitJob(o: SubmitOptions): Promise<number> {
  const out = o.out ?? process.stdout;
  const err = o.err ?? process.stderr;
  // Bundling (a cache lookup, or esbuild in its own process) and connecting to the head
  // (an SSH tunnel for remote clusters) overlap. A job that does not bundle is reported
  // first, as when they ran one after the other.
  const [b, conn] = await Promise.allSettled([bundleJob(o.entry), connectCluster(o.cluster)]);
  if (b.status === "rejected") {
    if (conn.status === "fulfilled") await conn.value.close();
    throw b.reason;
  }
  if (conn.status === "rejected") throw conn.reason;
  const bundle = b.value;
  const c = conn.value;
  try {
    // Lines that arrive before the "submitted" notice is written wait for it (same order as before).
    let early: LogLine[] | undefined = [];
    const onLine = (l: LogLine) => (early ? early.push(l) : printLine(l, out, err));
    const { job, ended } = await c.client.submitJobFollowing(
      { hash: bundle.hash, entrypoint: path.basename(o.entry), args: o.args, env: o.env, namespace: o.namespace },
      bundle.code,
      o.wait ? onLine : undefined,
    );
    err.write(`tray: job ${job.id} submitted to cluster "${c.state.name}"\n`);
    for (const l of early) printLine(l, out, err);
    early = undefined;
    if (!o.wait) {
      err.write(`tray: follow it with \`tray job logs ${job.id} -f\`\n`);
      return 0;
    }
    const onSigint = () => {
      err.write(`\ntray: stopped following; job ${job.id} keeps running (tray job stop ${job.id} to stop it)\n`);
      process.exit(130);
    };
    process.once("SIGINT", onSigint);
    const final = await ended!;
    process.removeListener("SIGINT", onSigint);
    return reportEnd(final, err);
  } finally {
    await c.close();
  }
}

function reportEnd(job: JobRecord, err: NodeJS.WritableStream): number {
  const secs = job.endedAt && job.startedAt ? ` in ${((job.endedAt - job.startedAt) / 1000).toFixed(2)} s` : "";
  if (job.status === "SUCCEEDED") {
    err.write(`tray: job ${job.id} SUCCEEDED${secs}\n`);
    return 0;
  }
  err.write(`tray: job ${job.id} ${job.status}${secs}${job.error ? `: ${job.error}` : ""}\n`);
  return 1;
}

async function withClient<T>(cluster: string | undefined, fn: (c: Awaited<ReturnType<typeof connectCluster>>) => Promise<T>): Promise<T> {
  const c = await connectCluster(cluster);
  try {
    return await fn(c);
  } catch (e) {
    if (e instanceof ApiError) throw new UserError(e.message);
    throw e;
  } finally {
    await c.close();
  }
}

export function listJobs(cluster?: string): Promise<JobRecord[]> {
  return withClient(cluster, (c) => c.client.listJobs());
}

export function jobStatus(id: string, cluster?: string): Promise<JobRecord> {
  return withClient(cluster, (c) => c.client.getJob(id));
}

export function stopJob(id: string, cluster?: string): Promise<JobRecord> {
  return withClient(cluster, (c) => c.client.stopJob(id));
}

export function jobLogs(id: string, follow: boolean, cluster?: string, out = process.stdout, err = process.stderr): Promise<number> {
  return withClient(cluster, async (c) => {
    const job = await c.client.streamLogs(id, follow, (l) => printLine(l, out, err));
    return follow ? reportEnd(job, err) : 0;
  });
}
