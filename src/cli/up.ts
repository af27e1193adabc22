import type { Command } from "commander";
import { run } from "./command.js";

export function register(program: Command): void {
  program
    .command("up")
    .description("create or update a cluster from a YAML file; shows every node's progress; idempotent")
    .argument("<config>", "cluster YAML (see cluster-configs/)")
    .option("-y, --yes", "do not ask for confirmation (tray never asks; accepted for Ray compatibility)")
    .option("--no-restart", "do not restart agents that are already running")
    .option("--restart-only", "skip setup steps; only (re)start the agents")
    .option("-n, --cluster-name <name>", "override cluster_name from the YAML")
    .option("--json", "JSON lines instead of text")
    .addHelpText("after", "\nExample:\n  tray up cluster-configs/local.yaml")
    .action(
      run(async (config: string, o: { restart: boolean; restartOnly?: boolean; clusterName?: string; json?: boolean }) => {
        const [{ up }, { createProgress }] = await Promise.all([import("../launcher/up.js"), import("../launcher/progress.js")]);
        const progress = createProgress({ json: o.json, stream: process.stderr });
        try {
          const s = await up(config, { name: o.clusterName, noRestart: o.restart === false, restartOnly: o.restartOnly }, progress);
          progress.done();
          for (const n of s.notes) process.stderr.write(`note: ${n}\n`);
          if (o.json) process.stdout.write(JSON.stringify(s) + "\n");
          else
            process.stdout.write(
              `Cluster "${s.name}" is up (${s.nodes} node${s.nodes === 1 ? "" : "s"}, head ${s.headAddress})${s.changed ? "" : ", nothing changed"} in ${(s.elapsedMs / 1000).toFixed(1)} s.\n` +
                `Next: tray submit examples/hello.ts   ·   tray status   ·   tray down ${config}\n`,
            );
        } finally {
          progress.done();
        }
      }),
    );
}
