#!/usr/bin/env node
// The tray CLI. Runs the bundled dist/cli.js, building it first on a fresh checkout.
// node:child_process is loaded only for that build (it costs every command ~10 ms otherwise).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cli = path.join(root, "dist", "cli.js");
if (!existsSync(cli) || !existsSync(path.join(root, "dist", "agent.js"))) {
  const { execFileSync } = await import("node:child_process");
  execFileSync(process.execPath, [path.join(root, "scripts", "build.mjs")], { stdio: ["ignore", "ignore", "inherit"] });
}
await import(cli);
