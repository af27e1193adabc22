// Runs the peer baselines in bench/peers (Piscina, Dask) on this machine and reads their
// `name value unit` lines.
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const PEERS_DIR = fileURLToPath(new URL("../peers/", import.meta.url));
const PYTHON = "/usr/bin/python3"; // the interpreter that sees Debian's python3-distributed

/**
 * Parses a peer script's stdout: one `name value unit` per line; `#` lines are comments
 * (the first one names the versions). Anything else is reported, not silently dropped.
 */
export function parsePeerOutput(text) {
  const metrics = [];
  const comments = [];
  const unparsed = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    if (line.startsWith("#")) {
      comments.push(line.replace(/^#\s*/, ""));
      continue;
    }
    const m = /^(\S+)\s+(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s+(\S+)$/i.exec(line);
    if (m) metrics.push({ metric: m[1], value: Number(m[2]), unit: m[3] });
    else unparsed.push(line);
  }
  return { metrics, comments, unparsed };
}

/** Which peers can run here, and why not when one cannot. */
export function peerAvailability() {
  return {
    piscina: piscinaResolvable() ? { ok: true } : { ok: true, install: true },
    dask: daskImportable() ? { ok: true } : { ok: false, why: `${PYTHON} cannot import distributed (apt-get install -y python3-distributed python3-numpy)` },
  };
}

function piscinaResolvable() {
  try {
    createRequire(new URL("piscina_bench.mjs", `file://${PEERS_DIR}`)).resolve("piscina");
    return true;
  } catch {
    return false;
  }
}

function daskImportable() {
  if (!existsSync(PYTHON)) return false;
  try {
    execFileSync(PYTHON, ["-c", "import distributed, numpy"], { stdio: "ignore", timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

/** Installs the peers' npm dependencies into bench/peers/node_modules (never committed). */
export function installPeerDependencies(log) {
  log("installing bench/peers dependencies (npm install --prefix bench/peers)");
  execFileSync("npm", ["install", "--prefix", PEERS_DIR, "--no-audit", "--no-fund", "--loglevel=error"], { stdio: ["ignore", "inherit", "inherit"] });
}

const COMMANDS = {
  piscina: () => [process.execPath, [`${PEERS_DIR}piscina_bench.mjs`]],
  dask: () => [PYTHON, [`${PEERS_DIR}dask_bench.py`]],
};

/** Runs one peer to completion; its stderr (samples) is passed through prefixed. */
export function runPeer(name, log) {
  const [cmd, args] = COMMANDS[name]();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: PEERS_DIR, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => {
      for (const line of String(d).split("\n")) if (line.trim()) log(`[${name}] ${line}`);
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const parsed = parsePeerOutput(out);
      if (code !== 0) reject(new Error(`peer ${name} exited with code ${code}`));
      else resolve(parsed);
    });
  });
}
