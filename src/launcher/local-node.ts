// exec / attach / rsync for a `local` cluster: its nodes are processes on this machine, so
// there is no SSH hop — commands run here, files are copied here.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { UserError } from "../errors.js";
import type { ClusterState } from "./state.js";

/** Paths on a node: relative ones (and ~) start at the home directory, as over SSH. */
function nodePath(p: string): string {
  if (p === "~" || p === "" || p === ".") return os.homedir();
  if (p.startsWith("~/")) return path.join(os.homedir(), p.slice(2));
  return path.isAbsolute(p) ? p : path.join(os.homedir(), p);
}

export function execLocal(
  state: ClusterState,
  command: string,
  o: { stdout?: NodeJS.WritableStream; stderr?: NodeJS.WritableStream },
): Promise<{ code: number; results: Array<{ node: string; host: string; code: number | null; signal?: string }> }> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", command], { cwd: os.homedir(), stdio: ["inherit", "pipe", "pipe"] });
    child.stdout.on("data", (b) => (o.stdout ?? process.stdout).write(b));
    child.stderr.on("data", (b) => (o.stderr ?? process.stderr).write(b));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const head = state.nodes.find((n) => n.kind === "head");
      const c = code ?? 128;
      resolve({ code: c, results: [{ node: head?.name ?? state.name, host: "127.0.0.1", code, signal: signal ?? undefined }] });
    });
  });
}

export function attachLocal(): Promise<number> {
  const shell = process.env.SHELL || "/bin/sh";
  return new Promise((resolve, reject) => {
    const child = spawn(shell, ["-i"], { cwd: os.homedir(), stdio: "inherit" });
    child.on("error", reject);
    child.on("close", (code) => resolve(code ?? 0));
  });
}

export function copyLocal(from: string, to: string, direction: "up" | "down"): number {
  const src = direction === "up" ? path.resolve(from) : nodePath(from);
  let dst = direction === "up" ? nodePath(to) : path.resolve(to);
  if (!fs.existsSync(src)) throw new UserError(`${from} does not exist${direction === "down" ? " on the head node (this machine)" : ""}.`);
  if (fs.existsSync(dst) && fs.statSync(dst).isDirectory() && !fs.statSync(src).isDirectory()) dst = path.join(dst, path.basename(src));
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.cpSync(src, dst, { recursive: true });
  let files = 0;
  const count = (p: string) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) count(path.join(p, e));
    else files++;
  };
  count(dst);
  return files;
}
