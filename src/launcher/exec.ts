// `tray exec CMD`: run a shell command on the head (or every node with allNodes) over SSH,
// streaming its output; the exit code is the command's (the first non-zero one with allNodes).
import { UserError, isUserError } from "../errors.js";
import { connectNode, sshClusterState } from "../ssh/cluster.js";
import { clusterState } from "./ips.js";
import type { NodeState } from "./state.js";

export interface ExecOptions {
  cluster?: string;
  allNodes?: boolean;
  /** Where output goes (default process.stdout / process.stderr). */
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Allocate a PTY (for commands that want a terminal). */
  tty?: boolean;
}

export interface NodeExecResult {
  node: string;
  host: string;
  code: number | null;
  signal?: string;
  error?: string;
}

/** Prefix each complete line with `prefix` (output of several nodes interleaved). */
function linePrefixer(prefix: string, out: NodeJS.WritableStream): { write(b: Buffer): void; flush(): void } {
  let rest = "";
  return {
    write(b) {
      const text = rest + b.toString("utf8");
      const lines = text.split("\n");
      rest = lines.pop() ?? "";
      for (const l of lines) out.write(`${prefix}${l}\n`);
    },
    flush() {
      if (rest) out.write(`${prefix}${rest}\n`);
      rest = "";
    },
  };
}

export async function execOnCluster(command: string, o: ExecOptions = {}): Promise<{ code: number; results: NodeExecResult[] }> {
  if (!command.trim()) throw new UserError("tray exec needs a command, e.g. tray exec 'uptime'.");
  const cs = clusterState(o.cluster);
  // Every node of a local cluster is this machine: run it here, once.
  if (cs.provider === "local") return (await import("./local-node.js")).execLocal(cs, command, o);
  const state = sshClusterState(cs.name);
  const stdout = o.stdout ?? process.stdout;
  const stderr = o.stderr ?? process.stderr;
  const nodes: NodeState[] = o.allNodes ? state.nodes : state.nodes.filter((n) => n.kind === "head");
  if (!nodes.length) throw new UserError(`Cluster "${state.name}" has no ${o.allNodes ? "" : "head "}node; run \`tray up\`.`);
  const width = Math.max(...nodes.map((n) => n.name.length));
  const results = await Promise.all(
    nodes.map(async (n): Promise<NodeExecResult> => {
      const host = n.ssh?.host ?? n.id;
      const multi = nodes.length > 1;
      const out = multi ? linePrefixer(`${n.name.padEnd(width)} | `, stdout) : undefined;
      const err = multi ? linePrefixer(`${n.name.padEnd(width)} | `, stderr) : undefined;
      try {
        const conn = await connectNode(state, n);
        try {
          const r = await conn.exec(command, {
            ...(o.tty ? { pty: true } : {}),
            maxOutput: 1,
            onData: (b, which) => {
              if (which === "stdout") (out ? out.write(b) : stdout.write(b));
              else (err ? err.write(b) : stderr.write(b));
            },
          });
          out?.flush();
          err?.flush();
          return { node: n.name, host, code: r.code, ...(r.signal ? { signal: r.signal } : {}) };
        } finally {
          conn.close();
        }
      } catch (e) {
        const msg = isUserError(e) ? e.message : String(e);
        if (!o.allNodes) throw e;
        stderr.write(`${n.name.padEnd(width)} | tray: ${msg}\n`);
        return { node: n.name, host, code: null, error: msg };
      }
    }),
  );
  // exit code: the first failing node's (255 for a node we could not reach, as ssh does)
  let code = 0;
  for (const r of results) {
    const c = r.error ? 255 : r.code === null ? (r.signal ? 128 + 9 : 255) : r.code;
    if (c !== 0) { code = c; break; }
  }
  return { code, results };
}
