// The head's durable control store (embedded SQLite): jobs, their logs, and a KV table.
// A restarted head reads its history back from here.
import path from "node:path";
import fs from "node:fs";
import Database from "better-sqlite3";
import type { JobRecord, JobStatus, LogLine } from "../../src/protocol/api.js";

type DB = import("better-sqlite3").Database;

// A static import, so that the bundler puts better-sqlite3's JavaScript into dist/agent.js:
// a host gets agent.js and the native addon, and no node_modules.
function openDatabase(file: string): DB {
  // The native addon travels next to the bundled agent (dist/better_sqlite3.node), so a host
  // needs no node_modules. In a source checkout, better-sqlite3 finds its own build.
  const here = path.dirname(new URL(import.meta.url).pathname);
  const beside = path.join(here, "better_sqlite3.node");
  return fs.existsSync(beside) ? new Database(file, { nativeBinding: beside }) : new Database(file);
}

export class ControlStore {
  private readonly db: DB;
  private pendingLogs: Array<[string, number, number, string, string]> = [];
  private flushTimer?: NodeJS.Timeout;
  private readonly seqs = new Map<string, number>();

  constructor(dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.db = openDatabase(path.join(dir, "control.sqlite"));
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, entrypoint TEXT NOT NULL, args TEXT NOT NULL,
        bundle TEXT NOT NULL, namespace TEXT NOT NULL, submitted_at INTEGER NOT NULL,
        started_at INTEGER, ended_at INTEGER, error TEXT, result TEXT);
      CREATE TABLE IF NOT EXISTS job_logs (
        job_id TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, stream TEXT NOT NULL, line TEXT NOT NULL,
        PRIMARY KEY (job_id, seq));
      CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB, PRIMARY KEY (ns, key));
    `);
  }

  insertJob(j: JobRecord): void {
    this.db
      .prepare(`INSERT INTO jobs (id, status, entrypoint, args, bundle, namespace, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?)`)
      .run(j.id, j.status, j.entrypoint, JSON.stringify(j.args), j.bundle, j.namespace, j.submittedAt);
  }

  updateJob(id: string, f: { status?: JobStatus; startedAt?: number; endedAt?: number; error?: string; result?: string }): void {
    const cur = this.getJob(id);
    if (!cur) return;
    this.db
      .prepare(`UPDATE jobs SET status = ?, started_at = ?, ended_at = ?, error = ?, result = ? WHERE id = ?`)
      .run(f.status ?? cur.status, f.startedAt ?? cur.startedAt ?? null, f.endedAt ?? cur.endedAt ?? null, f.error ?? cur.error ?? null, f.result ?? cur.result ?? null, id);
  }

  getJob(id: string): JobRecord | undefined {
    const r = this.db.prepare(`SELECT * FROM jobs WHERE id = ?`).get(id) as any;
    return r ? rowToJob(r) : undefined;
  }

  listJobs(limit = 1000): JobRecord[] {
    return (this.db.prepare(`SELECT * FROM jobs ORDER BY submitted_at DESC LIMIT ?`).all(limit) as any[]).map(rowToJob);
  }

  /** Append a log line; lines are written in batches (one transaction per 50 ms). */
  appendLog(jobId: string, stream: "stdout" | "stderr", line: string): LogLine {
    let seq = this.seqs.get(jobId);
    if (seq === undefined) {
      const r = this.db.prepare(`SELECT MAX(seq) AS m FROM job_logs WHERE job_id = ?`).get(jobId) as any;
      seq = r?.m ?? 0;
    }
    seq = seq! + 1;
    this.seqs.set(jobId, seq);
    const ts = Date.now();
    this.pendingLogs.push([jobId, seq, ts, stream, line]);
    if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flushLogs(), 50);
    return { seq, ts, stream, line };
  }

  flushLogs(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (!this.pendingLogs.length) return;
    const rows = this.pendingLogs;
    this.pendingLogs = [];
    const ins = this.db.prepare(`INSERT OR REPLACE INTO job_logs (job_id, seq, ts, stream, line) VALUES (?, ?, ?, ?, ?)`);
    this.db.transaction(() => {
      for (const r of rows) ins.run(...r);
    })();
  }

  logs(jobId: string, fromSeq = 0, limit = 100_000): LogLine[] {
    this.flushLogs();
    return this.db
      .prepare(`SELECT seq, ts, stream, line FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?`)
      .all(jobId, fromSeq, limit) as LogLine[];
  }

  kvPut(ns: string, key: string, value: Buffer): void {
    this.db.prepare(`INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)`).run(ns, key, value);
  }

  kvGet(ns: string, key: string): Buffer | undefined {
    return (this.db.prepare(`SELECT value FROM kv WHERE ns = ? AND key = ?`).get(ns, key) as any)?.value;
  }

  close(): void {
    this.flushLogs();
    this.db.close();
  }
}

function rowToJob(r: any): JobRecord {
  return {
    id: r.id,
    status: r.status,
    entrypoint: r.entrypoint,
    args: JSON.parse(r.args),
    bundle: r.bundle,
    namespace: r.namespace,
    submittedAt: r.submitted_at,
    startedAt: r.started_at ?? undefined,
    endedAt: r.ended_at ?? undefined,
    error: r.error ?? undefined,
    result: r.result ?? undefined,
  };
}
