// Test helper: a real local cluster (head agent + workers as processes) in a temp TRAY_HOME,
// driven through the real CLI, plus job files submitted as a user would.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { HeadClient } from "../../src/client/head-client.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI = path.join(ROOT, "bin/tray.js");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class TestCluster {
  readonly home: string;
  readonly configPath: string;
  constructor(
    readonly name: string,
    yaml?: string,
  ) {
    this.home = fs.mkdtempSync(path.join(os.tmpdir(), `tray-test-${name}-`));
    this.configPath = path.join(this.home, "cluster.yaml");
    fs.writeFileSync(
      this.configPath,
      yaml ??
        `cluster_name: ${name}\nprovider:\n  type: local\navailable_node_types:\n  head:\n    resources: { CPU: 2 }\n    node_config: {}\nhead_node_type: head\n`,
    );
  }

  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return { ...process.env, TRAY_HOME: this.home, TRAY_CLUSTER: this.name, ...extra };
  }

  /** Run the real CLI. */
  cli(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args],
        { env: this.env(opts.env), timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr }),
      );
    });
  }

  /** Start a CLI command and return the child (for following, killing mid-way). */
  spawnCli(args: string[], extraEnv: Record<string, string> = {}) {
    return spawn(process.execPath, [CLI, ...args], { env: this.env(extraEnv), stdio: ["ignore", "pipe", "pipe"] });
  }

  /**
   * `tray submit` of a job (its source) in the background, to act on the cluster while it
   * runs: its output so far, a wait for a line, its exit code, and its last JSON line.
   * `cliArgs` go to `tray submit` before the file (`--env K=V`).
   */
  startJob(src: string, args: string[] = [], cliArgs: string[] = []) {
    const f = path.join(this.home, `job-${Math.random().toString(36).slice(2)}.ts`);
    fs.writeFileSync(f, src);
    const child = this.spawnCli(["submit", ...cliArgs, f, "--", ...args]);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const code = new Promise<number>((res) => child.on("exit", (x) => res(x ?? 1)));
    return {
      code,
      out: () => out,
      err: () => err,
      saw: (re: RegExp, ms = 60_000) => waitFor(() => re.test(out) || undefined, ms, `job output ${re}`),
      result: async () => {
        const x = await code;
        assert.equal(x, 0, err + out);
        return JSON.parse(out.trim().split("\n").pop()!);
      },
    };
  }

  async up(): Promise<void> {
    const r = await this.cli(["up", this.configPath]);
    if (r.code !== 0) throw new Error(`tray up failed (${r.code}): ${r.stderr}${r.stdout}`);
  }

  async down(): Promise<CliResult> {
    const r = await this.cli(["down", this.configPath]);
    fs.rmSync(this.home, { recursive: true, force: true });
    return r;
  }

  state(): any {
    return JSON.parse(fs.readFileSync(path.join(this.home, "clusters", this.name, "state.json"), "utf8"));
  }

  token(): string {
    return fs.readFileSync(path.join(this.home, "clusters", this.name, "token"), "utf8").trim();
  }

  url(): string {
    const s = this.state();
    return `ws://${s.head.apiHost}:${s.head.apiPort}/`;
  }

  client(): Promise<HeadClient> {
    return HeadClient.connect({ url: this.url(), token: this.token() });
  }

  /** Write a job file into the temp dir and submit it; returns the CLI result. */
  async submit(source: string, args: string[] = [], cliArgs: string[] = []): Promise<CliResult> {
    const file = path.join(this.home, `job-${Math.random().toString(36).slice(2)}.ts`);
    fs.writeFileSync(file, source);
    return this.cli(["submit", ...cliArgs, file, "--", ...args]);
  }

  headPid(): number {
    return this.state().nodes.find((n: any) => n.kind === "head").pid;
  }
}

/** A job file's source importing tray as users do. */
export const job = (body: string) => body;

export function waitFor<T>(fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = async () => {
      try {
        const v = await fn();
        if (v !== undefined && v !== false) return resolve(v as T);
      } catch {
        /* retry */
      }
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 50);
    };
    void tick();
  });
}

/** YAML of a local cluster: a head and, per worker type, `count` node agents on this machine. */
export function localClusterYaml(
  name: string,
  o: { head?: Record<string, number>; workers?: Record<string, { resources: Record<string, number>; count: number }> } = {},
): string {
  const res = (r: Record<string, number>) => `{ ${Object.entries(r).map(([k, v]) => `${k}: ${v}`).join(", ")} }`;
  const workers = Object.entries(o.workers ?? {}).map(
    ([type, w]) => `  ${type}:\n    resources: ${res(w.resources)}\n    node_config: {}\n    min_workers: ${w.count}\n    max_workers: ${w.count}\n`,
  );
  return (
    `cluster_name: ${name}\nprovider:\n  type: local\navailable_node_types:\n` +
    `  head:\n    resources: ${res(o.head ?? { CPU: 1 })}\n    node_config: {}\n` +
    workers.join("") +
    `head_node_type: head\n`
  );
}
