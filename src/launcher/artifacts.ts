// Where the built agent lives: beside the bundled CLI (dist/), or in the checkout's dist/
// when the CLI runs from source (tests with tsx).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export function distDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const d of [here, path.resolve(here, ".."), path.resolve(here, "../../dist")]) {
    if (fs.existsSync(path.join(d, "agent.js"))) return d;
  }
  throw new Error(`the built agent (dist/agent.js) is missing next to ${here}: run \`npm run build\``);
}

export function agentScript(): string {
  return path.join(distDir(), "agent.js");
}
