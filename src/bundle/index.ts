// Bundles a job with esbuild: the job's own npm dependencies are included; `tray` itself is
// left out and provided by the process that imports the bundle (globalThis.__tray), so
// every worker of every node runs the same runtime as its agent. The bundle is named by
// the sha256 of its content: uploaded once, cached on every node.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { UserError } from "../errors.js";

/** Names the runtime exports; the virtual "tray" module re-exports them from the global. */
const RUNTIME_EXPORTS = [
  "remote", "get", "put", "wait", "cancel", "kill", "getActor", "getRuntimeContext", "nodes", "clusterResources",
  "availableResources", "ObjectRef", "ObjectRefGenerator", "ActorHandle", "TrayError", "TaskError", "WorkerCrashedError",
  "ActorDiedError", "ObjectLostError", "GetTimeoutError", "TaskCancelledError", "NodeDiedError", "OutOfMemoryError",
  "InfeasibleTaskError", "RuntimeEnvError", "placementGroup", "removePlacementGroup",
];

export interface Bundle {
  code: Uint8Array;
  hash: string;
}

export async function bundleJob(entry: string): Promise<Bundle> {
  const file = path.resolve(entry);
  if (!fs.existsSync(file)) throw new UserError(`Job file ${entry} does not exist.`);
  const { build } = await import("esbuild");
  const shim =
    "const t = globalThis.__tray;\n" +
    "if (!t) throw new Error('this job bundle runs inside tray workers only');\n" +
    RUNTIME_EXPORTS.map((n) => `export const ${n} = t.${n};`).join("\n") +
    "\nexport default t;\n";
  let result;
  try {
    result = await build({
      entryPoints: [file],
      bundle: true,
      platform: "node",
      target: "node20",
      format: "esm",
      write: false,
      sourcemap: "inline",
      // Sources resolve to the files on the submitter's machine, so a remote stack reads
      // /home/me/proj/job.ts:12 (workers and drivers enable source maps).
      sourceRoot: pathToFileURL(process.cwd()).href + "/",
      sourcesContent: false,
      // Function and class names show in errors, logs and `tray status` (esbuild would
      // otherwise rename `boom` to `boom2` when two modules both declare one).
      keepNames: true,
      logLevel: "silent",
      banner: { js: "import { createRequire as __trayCreateRequire } from 'node:module'; const require = __trayCreateRequire(import.meta.url);" },
      plugins: [
        {
          name: "tray-runtime",
          setup(b) {
            b.onResolve({ filter: /^tray$/ }, () => ({ path: "tray", namespace: "tray-runtime" }));
            b.onLoad({ filter: /.*/, namespace: "tray-runtime" }, () => ({ contents: shim, loader: "js" }));
          },
        },
      ],
    });
  } catch (e: any) {
    const first = e.errors?.[0];
    if (first) {
      const where = first.location ? `${path.relative(process.cwd(), first.location.file)}:${first.location.line}:${first.location.column}: ` : "";
      throw new UserError(`Could not bundle ${entry}: ${where}${first.text}`);
    }
    throw e;
  }
  const code = result.outputFiles[0]!.contents;
  const hash = crypto.createHash("sha256").update(code).digest("hex");
  return { code, hash };
}
