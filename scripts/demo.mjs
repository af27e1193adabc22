// npm run demo: bring up cluster-configs/local.yaml, submit examples/hello.ts, show its
// output, bring the cluster down — the whole product in one command, on a fresh clone.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const tray = (...args) => {
  console.log(`\n$ tray ${args.join(" ")}`);
  return spawnSync(process.execPath, [path.join(root, "bin/tray.js"), ...args], { cwd: root, stdio: "inherit" }).status;
};

let code = tray("up", "cluster-configs/local.yaml");
if (code === 0) {
  code = tray("submit", "examples/hello.ts", "--", "8");
  tray("status");
}
const downCode = tray("down", "cluster-configs/local.yaml");
process.exit(code || downCode || 0);
