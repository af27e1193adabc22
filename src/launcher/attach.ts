// `tray attach`: an interactive shell on the head over SSH, with a PTY whose size follows
// this terminal. Resolves with the shell's exit code.
import { UserError } from "../errors.js";
import { connectNode, headNode, sshClusterState } from "../ssh/cluster.js";
import { clusterState } from "./ips.js";

export interface AttachOptions {
  cluster?: string;
  /** Default process.stdin / process.stdout. */
  stdin?: NodeJS.ReadStream;
  stdout?: NodeJS.WriteStream;
}

export async function attach(o: AttachOptions = {}): Promise<number> {
  const cs = clusterState(o.cluster);
  if (cs.provider === "local") return (await import("./local-node.js")).attachLocal();
  const state = sshClusterState(cs.name);
  const stdin = o.stdin ?? process.stdin;
  const stdout = o.stdout ?? process.stdout;
  const head = headNode(state);
  const conn = await connectNode(state, head);
  const size = () => ({ rows: stdout.rows || 24, cols: stdout.columns || 80 });
  const ch = await conn.shell({ ...size(), term: process.env.TERM || "xterm-256color" });
  const raw = stdin.isTTY === true && typeof stdin.setRawMode === "function";
  if (raw) stdin.setRawMode(true);
  const onResize = () => {
    const s = size();
    ch.setWindow(s.rows, s.cols, 0, 0);
  };
  stdout.on("resize", onResize);
  const onData = (b: Buffer) => ch.write(b);
  stdin.on("data", onData);
  stdin.resume();
  ch.pipe(stdout, { end: false });
  ch.stderr.pipe(stdout, { end: false });
  try {
    return await new Promise<number>((resolve, reject) => {
      let code: number | undefined;
      ch.on("exit", (c: number | null, sig?: string) => { code = c ?? (sig ? 128 + 1 : 0); resolve(code); });
      ch.on("close", () => resolve(code ?? 0));
      // the tray stdin ended (piped input): end the shell's input too
      stdin.on("end", () => ch.end());
      conn.onClose((err) => (code === undefined ? reject(new UserError(`The connection to ${head.ssh?.host} was lost${err ? ` (${err.message})` : ""}.`)) : resolve(code)));
    });
  } finally {
    stdout.off("resize", onResize);
    stdin.off("data", onData);
    if (raw) stdin.setRawMode(false);
    stdin.pause();
    conn.close();
  }
}
