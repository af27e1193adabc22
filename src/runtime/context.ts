// The process-wide runtime core (set by the worker/driver entry). Kept behind an accessor so
// importing "tray" outside a tray process gives a sentence, not a crash deep inside.
import type { Core } from "./core.js";
import { TrayError } from "./errors.js";

let current: Core | undefined;

export function setCore(c: Core): void {
  current = c;
}

export function getCore(): Core {
  if (!current) {
    throw new Error(
      "tray's runtime is only available inside a job: run this file with `tray submit job.ts` (remote(), get(), put()... work there).",
    );
  }
  return current;
}

/** The job bundle this process is importing (see beginBundleLoad): its top-level code is running. */
let importing: string | undefined;

/** @internal set by beginBundleLoad/endBundleLoad */
export function setBundleImport(hash: string | undefined): void {
  importing = hash;
}

/** @internal the bundle being imported, if any (remote() numbers its functions) */
export function bundleImport(): string | undefined {
  return importing;
}

/**
 * The core for a runtime call a job makes (`what` + `name` name it for the message, in two
 * parts so that the hot path builds no string). Workers import
 * the job's module to find its functions, so work at its top level runs again in every worker;
 * a top-level get() there would block the worker, the agent would start another for the
 * tasks waiting, and that one would import the module too: a worker for every task, without
 * end. So in a worker such calls fail while the module loads, with the way out.
 */
export function apiCore(what: string, name = ""): Core {
  const core = getCore();
  if (importing !== undefined && core.isWorker) {
    throw new TrayError(
      `${what}${name} ran at the top level of the job's module, which every worker imports to find its functions: move that work into the default export (export default async function main(args) { ... })`,
    );
  }
  return core;
}

export function hasCore(): boolean {
  return current !== undefined;
}
