import type { Command } from "commander";
import { run } from "./command.js";

export function register(program: Command): void {
  program
    .command("down")
    .description("stop the agents, remove everything `up` created, and say what was removed")
    .argument("<config>", "cluster YAML")
    .option("-y, --yes", "do not ask for confirmation (accepted for Ray compatibility)")
    .option("--workers-only", "keep the head, remove the workers")
    .option("--keep-min-workers", "keep each worker type's min_workers running (lowest-numbered first); cloud and ssh clusters")
    .option("-n, --cluster-name <name>", "override cluster_name from the YAML")
    .option("--json", "JSON output")
    .addHelpText("after", "\nExample:\n  tray down cluster-configs/local.yaml")
    .action(
      run(async (config: string, o: { workersOnly?: boolean; keepMinWorkers?: boolean; clusterName?: string; json?: boolean }) => {
        const [{ down }, { createProgress }] = await Promise.all([import("../launcher/down.js"), import("../launcher/progress.js")]);
        const progress = createProgress({ json: o.json, stream: process.stderr });
        try {
          const s = await down(config, { name: o.clusterName, workersOnly: o.workersOnly, keepMinWorkers: o.keepMinWorkers }, progress);
          progress.done();
          if (o.json) process.stdout.write(JSON.stringify(s) + "\n");
          else if (s.alreadyDown) process.stdout.write(`Cluster "${s.name}" is already down; nothing to remove.\n`);
          else {
            process.stdout.write(
              o.workersOnly
                ? `Cluster "${s.name}": workers removed, the head keeps running (${(s.elapsedMs / 1000).toFixed(1)} s). Removed:\n`
                : `Cluster "${s.name}" is down (${(s.elapsedMs / 1000).toFixed(1)} s). Removed:\n`,
            );
            for (const r of s.removed) process.stdout.write(`  ${r}\n`);
          }
        } finally {
          progress.done();
        }
      }),
    );
}
