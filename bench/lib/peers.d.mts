// Types for peers.mjs.
import type { Metric } from "./metric.mjs";
export function parsePeerOutput(text: string): { metrics: Metric[]; comments: string[]; unparsed: string[] };
export function peerAvailability(): Record<string, { ok: boolean; install?: boolean; why?: string }>;
export function installPeerDependencies(log: (line: string) => void): void;
export function runPeer(name: string, log: (line: string) => void): Promise<{ metrics: Metric[]; comments: string[]; unparsed: string[] }>;
