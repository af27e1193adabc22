import type { Command } from "commander";
import { run } from "./command.js";
import { printTable } from "./job.js";

function fmt(k: string, v: number): string {
  if (k === "memory") return `${(v / 2 ** 30).toFixed(1)}GiB`;
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function usage(total: Record<string, number>, avail: Record<string, number>): string {
  // Placement-group bundle resources (CPU_group_<pg>_<i>, ...) are listed with the groups, not here.
  return Object.keys(total)
    .filter((k) => !k.includes("_group_"))
    .map((k) => `${k} ${fmt(k, total[k]! - (avail[k] ?? 0))}/${fmt(k, total[k]!)}`)
    .join(", ");
}

export function renderStatus(s: any): string {
  const lines: string[] = [];
  const out = { write: (x: string) => void lines.push(x) } as any;
  out.write(`Cluster ${s.cluster}\n\nNodes:\n`);
  printTable(
    ["NAME", "NODE ID", "ADDRESS", "STATE", "USED/TOTAL", "OBJECT STORE"],
    s.nodes.map((n: any) => [
      n.name + (n.isHead ? " (head)" : ""),
      String(n.nodeId).slice(0, 12),
      n.address,
      n.alive ? "alive" : "dead",
      usage(n.resources, n.available),
      n.store ? `${(n.store.used / 2 ** 20).toFixed(0)}MiB/${(n.store.capacity / 2 ** 20).toFixed(0)}MiB` + (n.store.spilledBytes ? ` (+${(n.store.spilledBytes / 2 ** 20).toFixed(0)}MiB spilled)` : "") : "-",
    ]),
    out,
  );
  const demand = s.nodes.flatMap((n: any) => n.pending ?? []);
  out.write(`\nPending demand: ${demand.length ? "" : "none"}\n`);
  for (const d of demand) out.write(`  ${d.count} × ${JSON.stringify(d.resources)}${d.infeasible ? "  INFEASIBLE: no node can ever fit this" : ""}\n`);
  const actors = (s.actors ?? []).filter((a: any) => a.state !== "dead");
  out.write(`\nActors: ${actors.length}\n`);
  for (const a of actors.slice(0, 20)) out.write(`  ${a.className}${a.name ? ` "${a.name}"` : ""} ${a.state}${a.detached ? " detached" : ""} ${a.id}\n`);
  const pgs = s.placementGroups ?? [];
  if (pgs.length) {
    out.write(`\nPlacement groups: ${pgs.length}\n`);
    for (const g of pgs.slice(0, 20)) {
      out.write(`  ${g.id}${g.name ? ` "${g.name}"` : ""} ${g.strategy} ${g.bundles.length} bundle(s) ${g.state}${g.reason ? ` (${g.reason})` : ""}\n`);
    }
  }
  out.write(`\nRecent jobs:\n`);
  if (!s.jobs.length) out.write("  none\n");
  for (const j of s.jobs.slice(0, 10)) out.write(`  ${j.id}  ${j.status.padEnd(9)}  ${j.entrypoint}${j.error ? `  (${j.error})` : ""}\n`);
  return lines.join("");
}

export function register(program: Command): void {
  program
    .command("status")
    .description("nodes, resources used/total, pending demand, actors and jobs")
    .option("--cluster <name>")
    .option("--watch", "refresh every 2 seconds")
    .option("--json", "JSON output")
    .addHelpText("after", "\nExample:\n  tray status --json")
    .action(
      run(async (o: { cluster?: string; watch?: boolean; json?: boolean }) => {
        const { connectCluster } = await import("../client/connect.js");
        const c = await connectCluster(o.cluster);
        try {
          for (;;) {
            const s = await c.client.status();
            if (o.json) process.stdout.write(JSON.stringify(s) + "\n");
            else {
              if (o.watch && process.stdout.isTTY) process.stdout.write("\x1b[2J\x1b[H");
              process.stdout.write(renderStatus(s));
            }
            if (!o.watch) return;
            await new Promise((r) => setTimeout(r, 2000));
          }
        } finally {
          await c.close();
        }
      }),
    );
}
