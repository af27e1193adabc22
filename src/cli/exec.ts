import type { Command } from "commander";
import { run } from "./command.js";

export function register(program: Command): void {
  program
    .command("exec")
    .description("run a shell command on the head node (or on every node); exits with its exit code")
    .argument("<cmd...>", "the command (quote it, or put it after --)")
    .option("--cluster <name>", "cluster name (default: the last one brought up)")
    .option("--all-nodes", "run on every node, output prefixed with the node's name")
    .option("-t, --tty", "allocate a terminal for the command")
    // `tray exec ls -la`: options tray does not know belong to the command (joined as ssh does)
    .allowUnknownOption(true)
    .addHelpText("after", "\nExamples:\n  tray exec nvidia-smi\n  tray exec --all-nodes 'df -h ~ | tail -1'\n  tray exec -- ls --color")
    .action(
      run(async (cmd: string[], o: { cluster?: string; allNodes?: boolean; tty?: boolean }) => {
        const { execOnCluster } = await import("../launcher/exec.js");
        const r = await execOnCluster(cmd.join(" "), { ...(o.cluster ? { cluster: o.cluster } : {}), ...(o.allNodes ? { allNodes: true } : {}), ...(o.tty ? { tty: true } : {}) });
        return r.code;
      }),
    );
}
