// Bundles a job with esbuild: the job's own npm dependencies are included; `tray` itself is
// left out and provided by the process that imports the bundle (globalThis.__tray), so
// every worker of every node runs the same runtime as its agent. The bundle is named by
// the sha256 of its content: uploaded once, cached on every node.
//
// The submitter keeps a cache of bundles (<TRAY_HOME>/cache/bundles/): an entry records every
// file esbuild read (content sha256, size, mtime) and what could change how imports resolve
// (the mtime of each input's folder, so an added or removed file counts; package.json,
// tsconfig.json and jsconfig.json of every folder above an input; node_modules/<package> of
// every folder above an importer, symlinks as themselves). A submit whose records all still
// hold reuses the bundle without loading esbuild (~100 ms); any difference rebuilds.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { UserError } from "../errors.js";
import { trayHome } from "../launcher/state.js";

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
  /** Taken from the submitter's bundle cache (nothing the job reads changed since it was built). */
  cached?: boolean;
}

export async function bundleJob(entry: string, opts: { cache?: boolean } = {}): Promise<Bundle> {
  const file = path.resolve(entry);
  if (!fs.existsSync(file)) throw new UserError(`Job file ${entry} does not exist.`);
  const useCache = (opts.cache ?? true) && process.env.TRAY_BUNDLE_CACHE !== "0";
  const key = useCache ? cacheKey(file) : undefined;
  if (key) {
    const hit = readCache(key);
    if (hit) return hit;
  }
  const started = Date.now();
  const built = await buildBundle(entry, file);
  if (key) writeCache(key, built, started);
  return { code: built.code, hash: built.hash };
}

interface Built extends Bundle {
  /** Every file esbuild read (absolute paths). */
  inputs: string[];
  /** Bare imports (npm packages): the importer's folder and the package's name. */
  packages: [dir: string, name: string][];
}

async function buildBundle(entry: string, file: string): Promise<Built> {
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
      metafile: true,
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
  const hash = sha256(code);
  // Inputs are relative to esbuild's working directory; virtual modules carry a namespace.
  const inputs: string[] = [];
  const packages: [string, string][] = [];
  for (const [p, info] of Object.entries(result.metafile!.inputs)) {
    if (/^[a-z-]+:/.test(p)) continue;
    const abs = path.resolve(p);
    inputs.push(abs);
    for (const imp of info.imports) {
      const spec = imp.original;
      if (!spec || imp.external || /^[a-z-]+:/.test(imp.path) || /^[./]/.test(spec)) continue;
      const parts = spec.split("/");
      packages.push([path.dirname(abs), spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!]);
    }
  }
  return { code, hash, inputs, packages };
}

const sha256 = (b: Uint8Array | string) => crypto.createHash("sha256").update(b).digest("hex");

// ---- the submitter's bundle cache ----------------------------------------------------------

/** Bump when the bundle's shape changes in a way the key below does not capture. */
const CACHE_FORMAT = 1;

interface CacheEntry {
  format: number;
  hash: string;
  /** Every file esbuild read: its content must be unchanged. */
  files: { path: string; size: number; mtimeMs: number; sha256: string }[];
  /**
   * Paths whose presence or mtime could change what an import resolves to (null: absent);
   * "l": the entry itself, not what a symlink there points to.
   */
  probes: [path: string, mtimeMs: number | null, link?: "l"][];
}

const cacheDir = () => path.join(trayHome(), "cache", "bundles");

/**
 * What the bundle depends on besides its input files: the entry, the working directory
 * (source map roots), NODE_PATH (esbuild resolves through it), and this code itself (its
 * file's path and mtime change with any rebuild or update of tray, esbuild's version with it).
 */
function cacheKey(file: string): string | undefined {
  try {
    const self = fileURLToPath(import.meta.url);
    const esbuildPkg = path.join(path.dirname(self), "..", "..", "node_modules", "esbuild", "package.json");
    return sha256(
      JSON.stringify([CACHE_FORMAT, file, process.cwd(), process.env.NODE_PATH ?? "", self, fs.statSync(self).mtimeMs, mtimeOrNull(esbuildPkg), RUNTIME_EXPORTS]),
    );
  } catch {
    return undefined; // no cache rather than a wrong one
  }
}

function mtimeOrNull(p: string, link?: "l"): number | null {
  try {
    return (link ? fs.lstatSync(p) : fs.statSync(p)).mtimeMs;
  } catch {
    return null;
  }
}

const ancestors = (dir: string): string[] => {
  const out = [dir];
  while (path.dirname(out[out.length - 1]!) !== out[out.length - 1]) out.push(path.dirname(out[out.length - 1]!));
  return out;
};

function probesFor(inputs: string[], packages: [string, string][]): CacheEntry["probes"] {
  const dirs = new Set<string>();
  for (const f of inputs) dirs.add(path.dirname(f));
  const probes = new Map<string, "l" | undefined>();
  for (const d of dirs) probes.set(d, undefined);
  // Resolution also reads package.json (main, exports, type) and tsconfig/jsconfig
  // (paths, jsx, decorators) of the folders above each input.
  const seen = new Set<string>();
  for (const d of dirs) {
    for (const x of ancestors(d)) {
      if (seen.has(x)) break;
      seen.add(x);
      for (const n of ["package.json", "tsconfig.json", "jsconfig.json"]) probes.set(path.join(x, n), undefined);
    }
  }
  // A package import is looked up in node_modules/<name> of every folder above the importer:
  // one appearing closer, or a symlink there re-pointed (pnpm, npm link), changes the bundle
  // while the files read before stay as they were.
  const pk = new Set<string>();
  for (const [d, name] of packages) {
    for (const x of ancestors(d)) if (path.basename(x) !== "node_modules") pk.add(path.join(x, "node_modules", name));
  }
  for (const p of pk) probes.set(p, "l");
  return [...probes].map(([p, l]) => (l ? [p, mtimeOrNull(p, l), l] : [p, mtimeOrNull(p)]));
}

function readCache(key: string): Bundle | undefined {
  let entry: CacheEntry;
  try {
    entry = JSON.parse(fs.readFileSync(path.join(cacheDir(), `${key}.json`), "utf8"));
  } catch {
    return undefined;
  }
  if (entry.format !== CACHE_FORMAT) return undefined;
  for (const [p, m, l] of entry.probes) if (mtimeOrNull(p, l) !== m) return undefined;
  for (const f of entry.files) {
    try {
      const st = fs.statSync(f.path);
      if (st.size !== f.size || st.mtimeMs !== f.mtimeMs) return undefined;
      // Same size and mtime is not proof (an edit within the clock's granularity, a restored
      // mtime): the content decides.
      if (sha256(fs.readFileSync(f.path)) !== f.sha256) return undefined;
    } catch {
      return undefined;
    }
  }
  try {
    const code = fs.readFileSync(path.join(cacheDir(), `${entry.hash}.mjs`));
    if (sha256(code) !== entry.hash) return undefined;
    return { code: new Uint8Array(code.buffer, code.byteOffset, code.byteLength), hash: entry.hash, cached: true };
  } catch {
    return undefined;
  }
}

/** A file modified this close to the build may have changed while esbuild read it (mtimes can be this coarse). */
const SETTLE_MS = 2000;

function writeCache(key: string, b: Built, buildStarted: number): void {
  try {
    const files: CacheEntry["files"] = [];
    for (const p of b.inputs) {
      const st = fs.statSync(p);
      // The content hashed here must be the content esbuild bundled: an input modified around
      // the build might not be, so such a bundle is not cached (the next submit caches it).
      if (st.mtimeMs > buildStarted - SETTLE_MS) return;
      const content = fs.readFileSync(p);
      if (fs.statSync(p).mtimeMs !== st.mtimeMs) return;
      files.push({ path: p, size: st.size, mtimeMs: st.mtimeMs, sha256: sha256(content) });
    }
    const entry: CacheEntry = { format: CACHE_FORMAT, hash: b.hash, files, probes: probesFor(b.inputs, b.packages) };
    const dir = cacheDir();
    fs.mkdirSync(dir, { recursive: true });
    const put = (name: string, data: Uint8Array | string) => {
      const tmp = path.join(dir, `${name}.${process.pid}.tmp`);
      fs.writeFileSync(tmp, data);
      fs.renameSync(tmp, path.join(dir, name));
    };
    let previous: string | undefined;
    try {
      previous = (JSON.parse(fs.readFileSync(path.join(dir, `${key}.json`), "utf8")) as CacheEntry).hash;
    } catch {}
    put(`${b.hash}.mjs`, b.code);
    put(`${key}.json`, JSON.stringify(entry));
    // One bundle per job file is kept: the version this entry replaced goes (another entry
    // that shared it simply rebuilds).
    if (previous && previous !== b.hash) fs.rmSync(path.join(dir, `${previous}.mjs`), { force: true });
  } catch {
    // A cache that cannot be written (read-only home, full disk) only costs the next rebuild.
  }
}
