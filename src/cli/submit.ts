import type { Command } from "commander";
import { run, collectKeyValue } from "./command.js";

export function register(program: Command): void {
  program
    .command("submit")
    .description("bundle a TypeScript job, run it on the cluster and stream its logs; exit code follows the job")
    .argument("<job>", "the job's entry file (its default export is the driver)")
    .argument("[args...]", "arguments passed to the job's default export (after --)")
    .option("--cluster <name>", "cluster to use (default: the last one brought up)")
    .option("--no-wait", "return once the job is submitted")
    .option("--env <KEY=VALUE>", "environment variable for the job (repeatable)", collectKeyValue, {})
    .option("--namespace <ns>", "namespace for named actors (default: default)")
    .addHelpText("after", "\nExample:\n  tray submit examples/hello.ts -- 1000")
    .action(
      run(async (job: string, args: string[], o: { cluster?: string; wait: boolean; env: Record<string, string>; namespace?: string }) => {
        const { submitJob } = await import("../client/jobs.js");
        return submitJob({ entry: job, args, cluster: o.cluster, wait: o.wait, env: o.env, namespace: o.namespace });
      }),
    );
}
