import type { Command } from "commander";
import { run } from "./command.js";
import { lastCluster, listClusters, pidAlive } from "../launcher/state.js";
import { printTable } from "./job.js";

export function register(program: Command): void {
  program
    .command("clusters")
    .description("clusters this machine knows, with their state")
    .option("--json", "JSON output")
    .addHelpText("after", "\nExample:\n  tray clusters")
    .action(
      run(async (o: { json?: boolean }) => {
        const all = listClusters();
        const last = lastCluster();
        const rows = all.map((s) => {
          const head = s.nodes.find((n) => n.kind === "head");
          // A local head that died without `down` shows as such, not as "up".
          const state = s.status === "up" && s.provider === "local" && head?.pid && !pidAlive(head.pid) ? "dead (run tray up again)" : s.status;
          return { name: s.name, provider: s.provider, state, nodes: s.nodes.length, head: s.head ? `${s.head.apiHost}:${s.head.apiPort}` : "-", current: s.name === last };
        });
        if (o.json) {
          process.stdout.write(JSON.stringify(rows) + "\n");
          return;
        }
        if (!rows.length) {
          process.stdout.write("No clusters yet: `tray up cluster-configs/local.yaml` starts one on this machine.\n");
          return;
        }
        printTable(["NAME", "PROVIDER", "STATE", "NODES", "HEAD"], rows.map((r) => [(r.current ? "* " : "  ") + r.name, r.provider, r.state, String(r.nodes), r.head]));
      }),
    );
}
