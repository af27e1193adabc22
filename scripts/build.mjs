// Bundles tray into dist/: cli.js (the CLI), agent.js (node agent + worker + driver, one
// file so a host needs nothing else), runtime.js (the `tray` package entry), and copies the
// better-sqlite3 native addon beside the agent, and tray's own optional native helpers
// (scripts/build-native.mjs). Skips work when dist/ is newer than sources.
import { build } from "esbuild";
import fs from "node:fs";
import { builtinModules } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildNative } from "./build-native.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
const watched = ["src", "agent", "package.json", "scripts/build.mjs"];

function newest(p) {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let m = st.mtimeMs;
  for (const e of fs.readdirSync(p)) m = Math.max(m, newest(path.join(p, e)));
  return m;
}

fs.mkdirSync(dist, { recursive: true });
{
  const note = buildNative(root, dist, process.argv.includes("--force"));
  if (note) console.error(note);
}

const outputs = ["cli.js", "agent.js", "runtime.js", "better_sqlite3.node"].map((f) => path.join(dist, f));
const upToDate =
  !process.argv.includes("--force") &&
  outputs.every((f) => fs.existsSync(f)) &&
  Math.min(...outputs.map((f) => fs.statSync(f).mtimeMs)) > Math.max(...watched.map((w) => newest(path.join(root, w))));
if (upToDate) process.exit(0);

// Old chunks are not removed before building: a CLI started a moment ago may still import
// them lazily (removing them made concurrent commands fail with ERR_MODULE_NOT_FOUND).
// Chunks this build did not write and that are older than an hour are removed after it.
const buildStart = Date.now();
fs.mkdirSync(dist, { recursive: true });

// A provider whose folder is absent in this checkout becomes a module that says so when used,
// instead of failing the whole build.
const missingProviders = {
  name: "missing-providers",
  setup(b) {
    b.onResolve({ filter: /^\.\/(aws|gcp|azure)\/index\.js$/ }, (a) => {
      const ts = path.join(a.resolveDir, a.path.replace(/\.js$/, ".ts"));
      return fs.existsSync(ts) ? undefined : { path: a.path, namespace: "missing-provider" };
    });
    b.onLoad({ filter: /.*/, namespace: "missing-provider" }, (a) => ({
      contents: `export function createProvider() { throw new Error("provider ${'$'}{a.path} is not part of this build"); }`,
      loader: "js",
    }));
  },
};
// The CLI runs where tray is installed, beside its node_modules: dependencies stay external
// (esbuild and ssh2 carry native parts; cloud SDKs load only with their provider), except the
// few pure-JS ones that every `tray submit` needs. Those are bundled in: loading them from
// node_modules cost ~65 ms per command (dozens of files resolved, read and scanned for
// CommonJS exports). msgpackr is taken without its optional native string extractor
// (msgpackr-extract, ~13 ms to load; it only speeds up decoding large frames).
const CLI_BUNDLED = new Set(["commander", "ws", "msgpackr"]);
const cliPackages = {
  name: "cli-packages",
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (a) => {
      if (a.path.startsWith("node:") || a.pluginData === "cli-packages") return undefined;
      const name = a.path.startsWith("@") ? a.path.split("/").slice(0, 2).join("/") : a.path.split("/")[0];
      if (!CLI_BUNDLED.has(name)) return { path: a.path, external: true };
      if (a.path !== "msgpackr") return undefined;
      const r = await b.resolve(a.path, { kind: a.kind, resolveDir: a.resolveDir, pluginData: "cli-packages" });
      return r.errors.length ? r : { path: path.join(path.dirname(r.path), "index.js") };
    });
  },
};
// Node built-ins in the CLI, for a faster start:
// - ws requires https, tls and zlib when it loads, but the CLI only opens ws:// connections
//   (loopback, or through its SSH tunnel) without compression; commander requires
//   child_process for executable subcommands, which tray has none of: these load on first use.
// - Our own `import ... from "node:x"` becomes require("node:x"). An ES import of a built-in
//   reads every export of it, which runs Node's lazy getters: importing node:crypto loaded
//   all of WebCrypto (~5-10 ms) that the CLI never uses.
const LAZY_IN = { ws: ["https", "tls", "zlib"], commander: ["child_process", "node:child_process"] };
const builtinsForCli = {
  name: "builtins-for-cli",
  setup(b) {
    b.onResolve({ filter: /^[a-z_]+(\/[a-z_]+)?$|^node:/ }, (a) => {
      const name = a.path.replace(/^node:/, "");
      if (!builtinModules.includes(name)) return undefined;
      const pkg = a.importer.match(/[\\/]node_modules[\\/]([^\\/]+)[\\/]/)?.[1];
      if (pkg) return LAZY_IN[pkg]?.includes(a.path) ? { path: name, namespace: "lazy-builtin" } : undefined;
      return a.kind === "import-statement" ? { path: name, namespace: "required-builtin" } : undefined;
    });
    b.onLoad({ filter: /.*/, namespace: "lazy-builtin" }, (a) => ({
      contents: `let m; module.exports = new Proxy({}, { get: (_, k) => (m ??= require("node:${a.path}"))[k] });`,
      loader: "js",
    }));
    b.onLoad({ filter: /.*/, namespace: "required-builtin" }, (a) => ({ contents: `module.exports = require("node:${a.path}");`, loader: "js" }));
  },
};
const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  sourcemap: "linked",
  logLevel: "warning",
  // CommonJS dependencies bundled into ESM need a require().
  banner: { js: "import { createRequire as __trayCreateRequire } from 'node:module'; const require = __trayCreateRequire(import.meta.url);" },
};
await Promise.all([
  build({
    ...common,
    entryPoints: { cli: path.join(root, "src/cli/main.ts") },
    outdir: dist,
    // Chunks per dynamic import(): `tray submit` never loads ssh2, yaml or a cloud SDK.
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
    jsx: "automatic",
    plugins: [missingProviders, builtinsForCli, cliPackages],
  }),
  build({
    ...common,
    entryPoints: [path.join(root, "agent/main.ts")],
    outfile: path.join(dist, "agent.js"),
    // better-sqlite3's JS is bundled; its native addon is loaded from beside agent.js.
    external: ["bindings"],
  }),
  build({
    ...common,
    entryPoints: [path.join(root, "src/runtime/index.ts")],
    outfile: path.join(dist, "runtime.js"),
  }),
]);
// Never rewrite the addon in place: running head agents have it mapped, and changing the
// file under them crashes them (SIGSEGV in a GC weak callback). Copy only when it differs,
// to a new file renamed over the old one (running agents keep the old inode).
{
  const src = path.join(root, "node_modules/better-sqlite3/build/Release/better_sqlite3.node");
  const dst = path.join(dist, "better_sqlite3.node");
  const same = fs.existsSync(dst) && fs.readFileSync(src).equals(fs.readFileSync(dst));
  if (same) fs.utimesSync(dst, new Date(), new Date());
  else {
    const tmp = `${dst}.${process.pid}.tmp`;
    fs.copyFileSync(src, tmp);
    fs.renameSync(tmp, dst);
  }
}
{
  const chunks = path.join(dist, "chunks");
  for (const f of fs.existsSync(chunks) ? fs.readdirSync(chunks) : []) {
    const p = path.join(chunks, f);
    const m = fs.statSync(p).mtimeMs;
    if (m < buildStart && m < buildStart - 3600_000) fs.rmSync(p, { force: true });
  }
}
console.error("built dist/ (cli.js, agent.js, runtime.js)");
