// The driver of a job: a process on the head that imports the job's bundle and calls its
// default export with the job's arguments. Its stdout/stderr are the job's logs.
import { coreFromEnv, loadBundle, trimStack } from "./worker.js";
import { toWireError } from "../../src/runtime/errors.js";

/**
 * A pre-started driver (TRAY_DRIVER_WAIT=1) waits for its job on stdin: one JSON line with
 * the job's environment. Node's start-up then is off the path from `tray submit` to the
 * job's first line.
 */
function awaitJob(): Promise<void> {
  return new Promise((resolve) => {
    let text = "";
    process.stdin.setEncoding("utf8");
    const onEnd = () => process.exit(0);
    const onData = (chunk: string) => {
      text += chunk;
      const nl = text.indexOf("\n");
      if (nl < 0) return;
      process.stdin.off("data", onData);
      process.stdin.off("end", onEnd);
      process.stdin.pause();
      Object.assign(process.env, JSON.parse(text.slice(0, nl)) as Record<string, string>);
      resolve();
    };
    process.stdin.on("data", onData);
    // The agent went away before giving us a job: nothing to do.
    process.stdin.on("end", onEnd);
  });
}

export async function runDriver(): Promise<void> {
  if (process.env.TRAY_DRIVER_WAIT === "1") {
    // What every job needs and Node loads lazily is loaded while waiting: the source-map
    // support (bundles carry inline maps) and the stdout/stderr streams (first console.log).
    process.setSourceMapsEnabled?.(true);
    void [process.stdout, process.stderr];
    await awaitJob();
  }
  const core = coreFromEnv(false);
  core.send({ t: "hello", role: "driver", pid: process.pid, job: core.jobId });
  const hash = process.env.TRAY_BUNDLE_HASH!;
  const args: string[] = JSON.parse(process.env.TRAY_JOB_ARGS ?? "[]");
  const finish = async (ok: boolean, err?: unknown, result?: unknown) => {
    let resultText: string | undefined;
    if (ok && result !== undefined) {
      try {
        resultText = JSON.stringify(result)?.slice(0, 64 * 1024);
      } catch {
        resultText = String(result).slice(0, 64 * 1024);
      }
    }
    core.send({ t: "jobDone", ok, err: err === undefined ? undefined : toWireError(err, "job"), result: resultText });
    core.flush();
    // Give the frame time to leave and stdout to drain before exiting.
    await new Promise((r) => setTimeout(r, 20));
    process.exit(ok ? 0 : 1);
  };
  process.on("unhandledRejection", (e) => {
    console.error("Unhandled promise rejection in the job:", e);
    void finish(false, e);
  });
  try {
    const mod = await loadBundle(hash);
    const main = mod?.default;
    if (typeof main !== "function") {
      throw Object.assign(new Error("the job has no default export: write `export default async function main(args) { ... }`"), {
        name: "JobError",
      });
    }
    const result = await main(args);
    await finish(true, undefined, result);
  } catch (e) {
    console.error(e instanceof Error ? (e.stack ? trimStack(e.stack) : `${e.name}: ${e.message}`) : String(e));
    await finish(false, e);
  }
}
