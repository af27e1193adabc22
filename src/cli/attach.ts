import type { Command } from "commander";
import { run } from "./command.js";

export function register(program: Command): void {
  program
    .command("attach")
    .description("interactive shell on the head node (over SSH; the window size follows your terminal)")
    .option("--cluster <name>", "cluster name (default: the last one brought up)")
    .addHelpText("after", "\nExample:\n  tray attach --cluster onprem")
    .action(
      run(async (o: { cluster?: string }) => {
        const { attach } = await import("../launcher/attach.js");
        return attach({ ...(o.cluster ? { cluster: o.cluster } : {}) });
      }),
    );
}
