// npm test: unit, integration and end-to-end tests with node's test runner (files passed
// explicitly: node 20 does not expand globs). `npm test -- unit` runs one folder.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const wanted = process.argv.slice(2);
const folders = wanted.length ? wanted : ["unit", "integration", "e2e"];
const files = [];
for (const f of folders) {
  const dir = path.join(root, "test", f);
  if (fs.existsSync(dir) && fs.statSync(dir).isFile()) {
    files.push(dir);
    continue;
  }
  if (!fs.existsSync(dir)) continue;
  for (const name of fs.readdirSync(dir).sort()) if (name.endsWith(".test.ts")) files.push(path.join("test", f, name));
}
if (!files.length) {
  console.error("no test files found");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...files], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, TRAY_INFEASIBLE_GRACE_MS: process.env.TRAY_INFEASIBLE_GRACE_MS ?? "1500" },
});
process.exit(r.status ?? 1);
