// The tray CLI: each command file parses its arguments and calls one library function.
import { Command } from "commander";
import { register as up } from "./up.js";
import { register as down } from "./down.js";
import { register as submit } from "./submit.js";
import { register as job } from "./job.js";
import { register as status } from "./status.js";
import { register as clusters } from "./clusters.js";
import { registerRemoteCommands } from "./remote-commands.js";

const program = new Command();
program
  .name("tray")
  .description("Ray, rebuilt for TypeScript: bring up a cluster, run TypeScript jobs on it")
  .version("0.1.0")
  .showHelpAfterError()
  .addHelpText("after", "\nQuick start:\n  tray up cluster-configs/local.yaml\n  tray submit examples/hello.ts\n  tray down cluster-configs/local.yaml");
// `tray submit ...` registers only submit (a command's help and errors do not list the
// others); anything else (help, a typo that gets a suggestion, the SSH commands) gets them all.
const byName: Record<string, (p: Command) => void> = { up, down, submit, job, status, clusters };
const named = Object.hasOwn(byName, process.argv[2] ?? "") ? byName[process.argv[2]!] : undefined;
for (const r of named ? [named] : [up, down, submit, job, status, clusters, registerRemoteCommands]) r(program);
await program.parseAsync(process.argv);
