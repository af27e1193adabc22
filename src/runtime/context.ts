// The process-wide runtime core (set by the worker/driver entry). Kept behind an accessor so
// importing "tray" outside a tray process gives a sentence, not a crash deep inside.
import type { Core } from "./core.js";

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

export function hasCore(): boolean {
  return current !== undefined;
}
