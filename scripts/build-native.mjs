// Builds tray's optional native helpers (native/tray_native.cc → dist/tray_native.node) with
// the machine's C++ compiler against Node-API headers. Optional by design: where no compiler
// (or no Linux) is present tray runs without it, on plain reads and writes, and says so here
// once per build. TRAY_NATIVE_BUILD=0 skips it.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

/** The first folder holding node_api.h: Node's own headers, else the node-api-headers package. */
function headerDir(root) {
  const dirs = [
    process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, "include/node"),
    path.resolve(path.dirname(process.execPath), "../include/node"),
    "/usr/local/include/node",
    "/usr/include/node",
    path.join(root, "node_modules/node-api-headers/include"),
  ].filter(Boolean);
  return dirs.find((d) => fs.existsSync(path.join(d, "node_api.h")));
}

/**
 * Compile when the binary is missing or older than its source. Returns a note for the build
 * log, or undefined when nothing was done. Never throws: a failed build leaves tray without
 * the native path, which it detects at run time.
 */
export function buildNative(root, dist, force = false) {
  if (process.env.TRAY_NATIVE_BUILD === "0") return undefined;
  const src = path.join(root, "native/tray_native.cc");
  const out = path.join(dist, "tray_native.node");
  if (!fs.existsSync(src)) return undefined;
  if (!force && fs.existsSync(out) && fs.statSync(out).mtimeMs > fs.statSync(src).mtimeMs) return undefined;
  if (process.platform !== "linux") return `native helpers not built: they need Linux (this is ${process.platform}); large objects use plain reads`;
  const include = headerDir(root);
  if (!include) return "native helpers not built: no Node-API headers found (npm ci installs node-api-headers); large objects use plain reads";
  const cxx = process.env.CXX || "g++";
  // Built to a new file and renamed over the old one: running agents keep the inode they mapped.
  const tmp = `${out}.${process.pid}.tmp`;
  const r = spawnSync(cxx, ["-O2", "-std=c++17", "-shared", "-fPIC", "-Wall", "-DNAPI_VERSION=8", `-I${include}`, "-o", tmp, src], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    fs.rmSync(tmp, { force: true });
    const why = r.error ? `${cxx} is not installed` : (r.stderr || "").trim().split("\n").slice(-3).join(" | ");
    return `native helpers not built (${why}); large objects use plain reads`;
  }
  fs.renameSync(tmp, out);
  return "built dist/tray_native.node";
}
