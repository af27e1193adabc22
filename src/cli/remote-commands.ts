// Commands that reach nodes over SSH (attach, exec, rsync-up/down, get-head-ip,
// get-worker-ips) live in their own files; this registers them all.
import type { Command } from "commander";
import { register as attach } from "./attach.js";
import { register as exec } from "./exec.js";
import { register as rsync } from "./rsync.js";
import { register as ips } from "./ips.js";

export function registerRemoteCommands(program: Command): void {
  for (const r of [attach, exec, rsync, ips]) r(program);
}
