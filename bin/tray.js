#!/usr/bin/env node
// The tray CLI. Runs the bundled dist/cli.js, building it first on a fresh checkout.
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cli = path.join(root, "dist", "cli.js");
if (!existsSync(cli) || !existsSync(path.join(root, "dist", "agent.js"))) {
  execFileSync(process.execPath, [path.join(root, "scripts", "build.mjs")], { stdio: ["ignore", "ignore", "inherit"] });
}
await import(cli);
