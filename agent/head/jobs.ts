// The job manager: stores job bundles by content hash, runs each job's driver on the head,
// keeps its status and logs durable, and streams logs to any number of followers.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import type { ControlStore } from "./control-store.js";
import type { NodeAgent } from "../node/agent.js";
import type { JobRecord, LogLine } from "../../src/protocol/api.js";
import { pipeLines } from "../node/pool.js";
import type { WireError } from "../../src/runtime/errors.js";

export interface JobFollower {
  onLog(jobId: string, line: LogLine): void;
  onEnd(jobId: string, job: JobRecord): void;
}

interface Running {
  proc: ChildProcess;
  reported?: { ok: boolean; err?: WireError; result?: string };
  stopRequested?: boolean;
  /** The exit was seen before the driver's report: waiting a moment for the report. */
  graceful?: boolean;
}

let driverSeq = 0;

export class JobManager {
  private readonly running = new Map<string, Running>();
  private readonly followers = new Map<string, Set<JobFollower>>();

  constructor(
    private readonly store: ControlStore,
    private readonly agent: NodeAgent,
  ) {
    // Jobs that were running when the head went down cannot be resumed: their driver died with it.
    for (const j of store.listJobs()) {
      if (j.status === "RUNNING" || j.status === "PENDING") {
        store.updateJob(j.id, { status: "FAILED", endedAt: Date.now(), error: "the head agent stopped while the job was running" });
      }
    }
  }

  bundlePath(hash: string): string {
    return path.join(this.agent.bundleDir, `${hash}.mjs`);
  }

  hasBundle(hash: string): boolean {
    return fs.existsSync(this.bundlePath(hash));
  }

  putBundle(hash: string, data: Uint8Array): void {
    const actual = crypto.createHash("sha256").update(data).digest("hex");
    if (actual !== hash) throw new Error(`bundle content hash is ${actual}, not ${hash}: the upload was corrupted`);
    const tmp = this.bundlePath(hash) + `.${process.pid}.tmp`;
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, this.bundlePath(hash));
  }

  submit(req: { hash: string; entrypoint: string; args: string[]; env?: Record<string, string>; namespace?: string }): JobRecord {
    if (!this.hasBundle(req.hash)) {
      throw Object.assign(new Error(`bundle ${req.hash} was not uploaded; upload it with putBundle first`), { code: "NO_BUNDLE" });
    }
    const id = `job-${Date.now().toString(36)}${crypto.randomBytes(3).toString("hex")}`;
    const job: JobRecord = {
      id,
      status: "PENDING",
      entrypoint: req.entrypoint,
      args: req.args,
      bundle: req.hash,
      namespace: req.namespace ?? "default",
      submittedAt: Date.now(),
    };
    this.store.insertJob(job);
    this.startDriver(job, req.env ?? {});
    return this.store.getJob(id)!;
  }

  /** A driver process started ahead of time, waiting on stdin for its job. */
  private spare?: { proc: ChildProcess; job?: string };

  private spawnDriver(): { proc: ChildProcess; job?: string } {
    const d: { proc: ChildProcess; job?: string } = {
      proc: spawn(process.execPath, [...profileArgs(), "--expose-gc", this.agent.opts.agentScript, "driver"], {
        env: { ...this.agent.baseEnv(), TRAY_DRIVER_WAIT: "1" },
        stdio: ["pipe", "pipe", "pipe"],
      }),
    };
    pipeLines(d.proc.stdout!, (l) => d.job && this.log(d.job, "stdout", l));
    pipeLines(d.proc.stderr!, (l) => (d.job ? this.log(d.job, "stderr", l) : console.error(`[driver ${d.proc.pid}] ${l}`)));
    d.proc.on("error", (e) => d.job && this.log(d.job, "stderr", `could not start the driver: ${e.message}`));
    d.proc.stdin!.on("error", () => {});
    return d;
  }

  private stopping = false;

  /** Keep one driver ready (called at start, after each job starts and when one ends). */
  prestartDriver(): void {
    if (this.stopping) return;
    if (this.spare && this.spare.proc.exitCode === null && !this.spare.job) return;
    const d = this.spawnDriver();
    this.spare = d;
    d.proc.on("exit", () => {
      if (this.spare === d) this.spare = undefined;
    });
  }

  private startDriver(job: JobRecord, env: Record<string, string>): void {
    let d = this.spare && this.spare.proc.exitCode === null && !this.spare.job ? this.spare : undefined;
    this.spare = undefined;
    d ??= this.spawnDriver();
    d.job = job.id;
    d.proc.stdin!.end(
      JSON.stringify({
        ...env,
        // the job's tasks and actors get it too (see jobEnv in src/runtime/core.ts)
        ...(Object.keys(env).length ? { TRAY_JOB_ENV: JSON.stringify(env) } : {}),
        TRAY_JOB_ID: job.id,
        TRAY_WORKER_ID: `${this.agent.opts.nodeId.slice(0, 8)}d${(++driverSeq).toString(36)}`,
        TRAY_BUNDLE_HASH: job.bundle,
        TRAY_JOB_ARGS: JSON.stringify(job.args),
        TRAY_NAMESPACE: job.namespace,
      }) + "\n",
    );
    const run: Running = { proc: d.proc };
    this.running.set(job.id, run);
    this.store.updateJob(job.id, { status: "RUNNING", startedAt: Date.now() });
    d.proc.on("close", (code, signal) => this.onDriverExit(job.id, run, code, signal));
    // The next job gets a warm driver too; started a moment later so it does not compete
    // with this job's own start.
    setTimeout(() => this.prestartDriver(), 300).unref();
  }


  log(jobId: string, stream: "stdout" | "stderr", line: string): void {
    const l = this.store.appendLog(jobId, stream, line);
    const fs = this.followers.get(jobId);
    if (fs) for (const f of fs) f.onLog(jobId, l);
  }

  /** The driver reported its outcome (before exiting). */
  reported(jobId: string, ok: boolean, err?: WireError, result?: string): void {
    const r = this.running.get(jobId);
    if (r) r.reported = { ok, err, result };
  }

  private onDriverExit(jobId: string, run: Running, code: number | null, signal: string | null): void {
    // The driver sends its outcome on the agent socket and then exits; when the agent is busy
    // it can see the exit first. Give the report a moment to arrive before judging the job.
    if (!run.reported && !run.stopRequested && !signal && !run.graceful) {
      run.graceful = true;
      setTimeout(() => this.onDriverExit(jobId, run, code, signal), 200).unref();
      return;
    }
    this.running.delete(jobId);
    let status: JobRecord["status"];
    let error: string | undefined;
    if (run.stopRequested) {
      status = "STOPPED";
      error = "stopped by the user";
    } else if (run.reported?.ok && code === 0) {
      status = "SUCCEEDED";
    } else {
      status = "FAILED";
      const e = run.reported?.err;
      error = e ? `${e.causeName ?? e.kind}: ${e.message}` : `the driver ${signal ? `was killed by ${signal}` : `exited with code ${code}`} before the job finished`;
    }
    this.store.updateJob(jobId, { status, endedAt: Date.now(), error, result: run.reported?.result });
    this.store.flushLogs();
    this.agent.endJob(jobId);
    const job = this.store.getJob(jobId)!;
    const fs = this.followers.get(jobId);
    if (fs) for (const f of fs) f.onEnd(jobId, job);
    this.followers.delete(jobId);
    // A short job ends before the delayed start of the next spare driver: start it now, so
    // a submit that follows at once finds a driver that has finished starting.
    this.prestartDriver();
  }

  stop(jobId: string): JobRecord {
    const job = this.store.getJob(jobId);
    if (!job) throw new Error(`no job ${jobId}`);
    const run = this.running.get(jobId);
    if (run) {
      run.stopRequested = true;
      run.proc.kill("SIGTERM");
      setTimeout(() => run.proc.kill("SIGKILL"), 3000).unref();
    }
    return job;
  }

  follow(jobId: string, f: JobFollower): boolean {
    if (!this.running.has(jobId)) return false;
    let s = this.followers.get(jobId);
    if (!s) this.followers.set(jobId, (s = new Set()));
    s.add(f);
    return true;
  }

  unfollow(jobId: string, f: JobFollower): void {
    this.followers.get(jobId)?.delete(f);
  }

  stopAll(): void {
    this.stopping = true;
    this.spare?.proc.kill("SIGKILL");
    for (const [, r] of this.running) {
      r.stopRequested = true;
      r.proc.kill("SIGKILL");
    }
  }
}

/** TRAY_CPU_PROF_DIR (given to `tray up`): drivers write a CPU profile there when they exit. */
function profileArgs(): string[] {
  const dir = process.env.TRAY_CPU_PROF_DIR;
  return dir ? ["--cpu-prof", "--cpu-prof-dir", dir] : [];
}
