// The smallest job: one log line as soon as the driver starts. bench/lib/tray-cluster.mjs
// times `tray submit` of this file to the line reaching the terminal (submit_to_first_log_ms).
export default function main() {
  console.log("first-log");
}
