import type { Command } from "commander";
import { run } from "./command.js";

export function register(program: Command): void {
  program
    .command("rsync-up")
    .description("copy a local file or directory to the head node (or every node)")
    .argument("<src>", "local path")
    .argument("<dst>", "path on the nodes (relative paths and ~ are the login user's home)")
    .option("--cluster <name>", "cluster name (default: the last one brought up)")
    .option("--all-nodes", "copy to every node, not only the head")
    .addHelpText("after", "\nExample:\n  tray rsync-up ./data ~/data --all-nodes")
    .action(
      run(async (src: string, dst: string, o: { cluster?: string; allNodes?: boolean }) => {
        const { rsyncUp } = await import("../launcher/rsync.js");
        const r = await rsyncUp(src, dst, { ...(o.cluster ? { cluster: o.cluster } : {}), ...(o.allNodes ? { allNodes: true } : {}) });
        process.stderr.write(`copied ${r.files} file${r.files === 1 ? "" : "s"} to ${r.nodes.join(", ")}\n`);
      }),
    );
  program
    .command("rsync-down")
    .description("copy a file or directory from the head node (or --node) to this machine")
    .argument("<src>", "path on the node (relative paths and ~ are the login user's home)")
    .argument("<dst>", "local path")
    .option("--cluster <name>", "cluster name (default: the last one brought up)")
    .option("--node <name>", "copy from this node (name or address) instead of the head")
    .addHelpText("after", "\nExample:\n  tray rsync-down ~/results ./results")
    .action(
      run(async (src: string, dst: string, o: { cluster?: string; node?: string }) => {
        const { rsyncDown } = await import("../launcher/rsync.js");
        const r = await rsyncDown(src, dst, { ...(o.cluster ? { cluster: o.cluster } : {}), ...(o.node ? { node: o.node } : {}) });
        process.stderr.write(`copied ${r.files} file${r.files === 1 ? "" : "s"} from ${r.nodes.join(", ")}\n`);
      }),
    );
}
