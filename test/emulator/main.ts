// Run one cloud emulator by hand, to try `tray up` against it from a shell:
//   node --import tsx test/emulator/main.ts aws|gcp|azure
// prints the environment to export (and the provider section for the YAML), then serves until
// Ctrl-C, removing every host it made. Needs root (network namespaces), iproute2, openssh-server.
import { harnesses, emulatorUnavailable, type CloudName } from "./index.js";

const cloud = process.argv[2] as CloudName | undefined;
const h = harnesses.find((x) => x.cloud === cloud);
if (!h) {
  console.error("usage: node --import tsx test/emulator/main.ts aws|gcp|azure");
  process.exit(2);
}
const why = emulatorUnavailable(h.cloud);
if (why) {
  console.error(`emulator: ${why}`);
  process.exit(1);
}
const emu = await h.start();
for (const [k, v] of Object.entries(h.env(emu))) console.log(`export ${k}='${v}'`);
console.log(`# provider section for the YAML (auth.ssh_user: ${h.user}):`);
console.log(`# provider: ${JSON.stringify(h.provider(emu, "demo"))}`);
console.log(`# node_config: ${JSON.stringify(h.nodeConfig())}`);
console.log(`# emulator ${h.cloud} at ${emu.url}; Ctrl-C stops it and removes its hosts`);
const stop = async () => {
  await emu.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
