// loadProvider(config): the one factory the launcher calls. Every provider module is
// loaded with import() only when its type is asked for, so `tray submit` (which needs no
// provider) and `tray up` of a local cluster never load a cloud SDK.
//
// Also the few helpers the three cloud providers share (config reading, tags, the user's
// public key, the caller's address): none of them imports an SDK.
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { UserError } from "../errors.js";
import { TAG_CLUSTER, TAG_NODE_KIND, TAG_NODE_NAME, TAG_NODE_TYPE, type Provider } from "./interface.js";

/** The part of a cluster config a provider reads (the full ClusterConfig is a superset). */
export interface ProviderClusterConfig {
  cluster_name: string;
  provider: { type: string; [key: string]: unknown };
  auth?: { ssh_user?: string; ssh_private_key?: string; ssh_public_key?: string; [key: string]: unknown };
  /** Absolute path of the YAML, for messages. */
  configPath?: string;
  [key: string]: unknown;
}

export const PROVIDER_TYPES = ["local", "ssh", "aws", "gcp", "azure"] as const;

export async function loadProvider(config: ProviderClusterConfig): Promise<Provider> {
  const type = config.provider?.type;
  let mod: { createProvider(config: any): Provider | Promise<Provider> };
  switch (type) {
    case "local":
      mod = await import("./local/index.js");
      break;
    case "ssh":
      mod = await import("./ssh/index.js");
      break;
    case "aws":
      mod = await import("./aws/index.js");
      break;
    case "gcp":
      mod = await import("./gcp/index.js");
      break;
    case "azure":
      mod = await import("./azure/index.js");
      break;
    default:
      throw new UserError(
        `provider.type "${String(type)}" is not known; use one of ${PROVIDER_TYPES.join(", ")}.`,
      );
  }
  return await mod.createProvider(config);
}

// ---------------------------------------------------------------- shared by the clouds

/** Tags for a per-node resource (instance, disk, NIC, public IP). */
export function nodeTags(
  clusterName: string,
  nodeType: string,
  kind: "head" | "worker",
  nodeName: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return { ...extra, [TAG_CLUSTER]: clusterName, [TAG_NODE_TYPE]: nodeType, [TAG_NODE_KIND]: kind, [TAG_NODE_NAME]: nodeName };
}

/** Tags for a cluster-wide resource (security group, key pair, network). */
export function clusterTags(clusterName: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...extra, [TAG_CLUSTER]: clusterName };
}

/** Extra tags from the YAML (provider.tags), as strings. */
export function extraTags(config: ProviderClusterConfig): Record<string, string> {
  const t = config.provider.tags;
  const out: Record<string, string> = {};
  if (t && typeof t === "object") for (const [k, v] of Object.entries(t)) out[k] = String(v);
  return out;
}

export function providerString(config: ProviderClusterConfig, key: string): string | undefined {
  const v = config.provider[key];
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new UserError(`provider.${key} must be a string (got ${JSON.stringify(v)}).`);
  return v;
}

export function requireProviderString(config: ProviderClusterConfig, key: string, example: string): string {
  const v = providerString(config, key);
  if (!v) throw new UserError(`provider.${key} is required for provider type ${config.provider.type} (e.g. ${key}: ${example}).`);
  return v;
}

/** "us-east-1a, us-east-1b" or a YAML list -> ["us-east-1a", "us-east-1b"]. */
export function zoneList(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String).map((s) => s.trim()).filter(Boolean);
  if (typeof v === "string") return v.split(",").map((s) => s.trim()).filter(Boolean);
  return [];
}

function expandHome(p: string): string {
  return p.startsWith("~/") ? path.join(os.homedir(), p.slice(2)) : p;
}

/**
 * The user's PUBLIC key, one line "ssh-ed25519 AAAA... comment". Read from auth.ssh_public_key,
 * else from auth.ssh_private_key + ".pub", else derived from the private key. The private key
 * itself never leaves this machine.
 */
export async function readPublicKey(config: ProviderClusterConfig): Promise<string> {
  const auth = config.auth ?? {};
  const priv = expandHome(String(auth.ssh_private_key ?? "~/.ssh/id_ed25519"));
  const candidates = auth.ssh_public_key ? [expandHome(String(auth.ssh_public_key))] : [priv + ".pub"];
  for (const file of candidates) {
    try {
      const line = fs.readFileSync(file, "utf8").trim().split("\n")[0]!.trim();
      if (/^(ssh-(ed25519|rsa)|ecdsa-sha2-\S+) [A-Za-z0-9+/=]+/.test(line)) return line;
      throw new UserError(`${file} (auth.ssh_public_key) is not an OpenSSH public key.`);
    } catch (e: any) {
      if (e.code !== "ENOENT") throw e;
    }
  }
  let pem: string;
  try {
    pem = fs.readFileSync(priv, "utf8");
  } catch (e: any) {
    throw new UserError(
      `No SSH key for the cluster: ${priv} (auth.ssh_private_key) ${e.code === "ENOENT" ? "does not exist" : "is unreadable: " + e.message}.`,
      { hint: `create one with: ssh-keygen -t ed25519 -f ${priv}` },
    );
  }
  const ssh2: any = await import("ssh2");
  const parsed = (ssh2.utils ?? ssh2.default?.utils).parseKey(pem);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key instanceof Error) {
    throw new UserError(`${priv} (auth.ssh_private_key) is not a usable private key${key instanceof Error ? ": " + key.message : ""}.`);
  }
  return `${key.type} ${key.getPublicSSH().toString("base64")} tray`;
}

/** A short stable fingerprint of a public key line, for resource names. */
export function keyFingerprint(publicKey: string): string {
  const b64 = publicKey.split(/\s+/)[1] ?? publicKey;
  return crypto.createHash("sha256").update(b64).digest("hex").slice(0, 10);
}

/**
 * The CIDR allowed to reach port 22: provider.ssh_allowed_cidr, else this machine's public
 * address as seen from the internet (TRAY_CHECKIP_URL, default https://checkip.amazonaws.com) as /32.
 */
export async function callerCidr(config: ProviderClusterConfig): Promise<string> {
  const given = config.provider.ssh_allowed_cidr;
  if (given !== undefined && given !== null && given !== "") {
    const s = String(given).trim();
    if (!/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(s)) {
      throw new UserError(`provider.ssh_allowed_cidr must be an IPv4 CIDR such as 203.0.113.7/32 (got "${s}").`);
    }
    return s;
  }
  const url = process.env.TRAY_CHECKIP_URL || "https://checkip.amazonaws.com";
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    const ip = (await res.text()).trim();
    if (!res.ok || !/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) throw new Error(`unexpected answer ${res.status} "${ip.slice(0, 40)}"`);
    return `${ip}/32`;
  } catch (e: any) {
    throw new UserError(`Could not detect this machine's public address from ${url} (${e.message}); set provider.ssh_allowed_cidr.`);
  }
}

export function useInternalIps(config: ProviderClusterConfig): boolean {
  return config.provider.use_internal_ips === true;
}

export function sshUser(config: ProviderClusterConfig, dflt: string): string {
  return String(config.auth?.ssh_user ?? dflt);
}

/** Poll `check` until it returns a value or `timeoutMs` passes; delays grow from 500 ms to 5 s. */
export async function pollUntil<T>(check: () => Promise<T | undefined>, timeoutMs: number, onTimeout: () => Error): Promise<T> {
  const end = Date.now() + timeoutMs;
  let delay = 250;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() >= end) throw onTimeout();
    await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, end - Date.now()))));
    delay = Math.min(5000, delay * 2);
  }
}
