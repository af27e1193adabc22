import type { Command } from "commander";
import { run } from "./command.js";
import { getHeadIp, getWorkerIps } from "../launcher/ips.js";

export function register(program: Command): void {
  program
    .command("get-head-ip")
    .description("print the head node's address")
    .option("--cluster <name>", "cluster name (default: the last one brought up)")
    .option("--internal", "the private address (what the nodes use) instead of the public one")
    .addHelpText("after", "\nExample:\n  ssh ubuntu@$(tray get-head-ip)")
    .action(
      run(async (o: { cluster?: string; internal?: boolean }) => {
        process.stdout.write(getHeadIp({ ...(o.cluster ? { cluster: o.cluster } : {}), ...(o.internal ? { internal: true } : {}) }) + "\n");
      }),
    );
  program
    .command("get-worker-ips")
    .description("print the worker nodes' addresses, one a line")
    .option("--cluster <name>", "cluster name (default: the last one brought up)")
    .option("--internal", "private addresses instead of public ones")
    .addHelpText("after", "\nExample:\n  tray get-worker-ips | xargs -n1 ping -c1")
    .action(
      run(async (o: { cluster?: string; internal?: boolean }) => {
        const ips = getWorkerIps({ ...(o.cluster ? { cluster: o.cluster } : {}), ...(o.internal ? { internal: true } : {}) });
        if (ips.length) process.stdout.write(ips.join("\n") + "\n");
      }),
    );
}
