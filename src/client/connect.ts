// Connect the CLI to a cluster's head: directly on loopback for `local`, through an SSH
// tunnel for everything else (the head's API port never faces the internet).
import { UserError } from "../errors.js";
import { lastCluster, readState, readToken, type ClusterState } from "../launcher/state.js";
import { HeadClient } from "./head-client.js";

export function resolveClusterName(name?: string): string {
  const n = name ?? process.env.TRAY_CLUSTER ?? lastCluster();
  if (!n) throw new UserError("No cluster given and none brought up on this machine yet: run `tray up CONFIG` first, or pass --cluster NAME.");
  return n;
}

export function requireUpState(name?: string): ClusterState {
  const n = resolveClusterName(name);
  const state = readState(n);
  if (!state) throw new UserError(`No cluster named "${n}" is known on this machine: run \`tray up\` first (see \`tray clusters\`).`);
  if (state.status !== "up" || !state.head) throw new UserError(`Cluster "${n}" is ${state.status}: run \`tray up ${state.configPath ?? "CONFIG"}\` to bring it up.`);
  return state;
}

export interface ClusterConnection {
  client: HeadClient;
  state: ClusterState;
  close(): Promise<void>;
}

export async function connectCluster(name?: string): Promise<ClusterConnection> {
  const state = requireUpState(name);
  const token = readToken(state.name);
  if (!token) throw new UserError(`The token of cluster "${state.name}" is missing from this machine; run \`tray up\` again.`);
  if (state.provider === "local") {
    const client = await HeadClient.connect({ url: `ws://${state.head!.apiHost}:${state.head!.apiPort}/`, token });
    return { client, state, close: async () => client.close() };
  }
  const { openHeadTunnel } = await import("./tunnel.js");
  const tunnel = await openHeadTunnel(state);
  const client = await HeadClient.connect({ url: tunnel.url, token, createConnection: tunnel.createConnection });
  return {
    client,
    state,
    close: async () => {
      client.close();
      await tunnel.close();
    },
  };
}
