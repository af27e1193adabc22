// A job that spreads N tasks over the cluster and prints which nodes ran them:
//   tray submit test/jobs/spread-nodes.ts -- N MS    → "NODES [...node ids]"
// Used by the SSH and cloud end-to-end tests (each task sleeps MS, retried if a node is cut).
import { remote, get, getRuntimeContext } from "tray";

const where = remote(
  async (ms: number) => {
    await new Promise((r) => setTimeout(r, ms));
    return getRuntimeContext().nodeId;
  },
  { schedulingStrategy: "SPREAD", maxRetries: 5 },
);

export default async function main(args: string[]) {
  const n = Number(args[0] ?? 12);
  const ms = Number(args[1] ?? 300);
  console.log("started");
  const ids = await get(Array.from({ length: n }, () => where.remote(ms)));
  console.log("NODES " + JSON.stringify([...new Set(ids)].sort()));
}
