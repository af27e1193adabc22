// Host-key verification, as pure functions: what to do with the key a host presented, given
// the key pinned in the cluster's state (trust on first use) and an optional known_hosts file.
// The SSH client (client.ts) asks decideHostKey() during the handshake; nothing here does I/O
// except readKnownHosts().
import { createHash, createHmac } from "node:crypto";
import fs from "node:fs";

/** "host:port" as used for ClusterState.hostKeys. */
export function hostKeyId(host: string, port: number): string {
  return `${host}:${port}`;
}

/** The key type inside an SSH public-key blob (first length-prefixed string). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return "unknown";
  const len = blob.readUInt32BE(0);
  if (len <= 0 || len > 64 || blob.length < 4 + len) return "unknown";
  return blob.subarray(4, 4 + len).toString("latin1");
}

/** "ssh-ed25519 AAAA..." for a raw key blob, the form pinned in state and written in known_hosts. */
export function formatHostKey(blob: Buffer): string {
  return `${keyTypeOf(blob)} ${blob.toString("base64")}`;
}

/** Normalise "type base64 [comment]" to "type base64". */
export function normaliseKey(line: string): string {
  const [type, b64] = line.trim().split(/\s+/);
  return `${type ?? ""} ${b64 ?? ""}`;
}

/** SHA256 fingerprint as OpenSSH prints it ("SHA256:..."), for messages. */
export function fingerprint(key: string): string {
  const b64 = normaliseKey(key).split(" ")[1] ?? "";
  const digest = createHash("sha256").update(Buffer.from(b64, "base64")).digest("base64");
  return "SHA256:" + digest.replace(/=+$/, "");
}


export interface KnownHostEntry {
  /** Patterns as written (plain names, "[host]:port", or a hashed "|1|salt|hash"). */
  patterns: string[];
  key: string; // "type base64"
  marker?: "@revoked" | "@cert-authority";
}

/** Parse known_hosts text; malformed lines are skipped (as OpenSSH does). */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const parts = line.split(/\s+/);
    let marker: KnownHostEntry["marker"];
    if (parts[0] === "@revoked" || parts[0] === "@cert-authority") marker = parts.shift() as KnownHostEntry["marker"];
    if (parts.length < 3) continue;
    const [hosts, type, b64] = parts as [string, string, string];
    out.push({ patterns: hosts.split(","), key: `${type} ${b64}`, ...(marker ? { marker } : {}) });
  }
  return out;
}

export function readKnownHosts(file: string): KnownHostEntry[] {
  return parseKnownHosts(fs.readFileSync(file, "utf8"));
}

/** Does one known_hosts pattern name this host:port? (hashed, [host]:port, wildcards *, ?, negation !) */
function patternMatches(pattern: string, host: string, port: number): boolean {
  const name = port === 22 ? host : `[${host}]:${port}`;
  if (pattern.startsWith("|1|")) {
    const [, , salt, hash] = pattern.split("|");
    if (!salt || !hash) return false;
    const h = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64");
    return h === hash;
  }
  const re = new RegExp("^" + pattern.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\[/g, "\\[").replace(/\]/g, "\\]").replace(/\*/g, ".*").replace(/\?/g, ".") + "$", "i");
  return re.test(name);
}

export function knownKeysFor(entries: KnownHostEntry[], host: string, port: number): { keys: string[]; revoked: string[] } {
  const keys: string[] = [];
  const revoked: string[] = [];
  for (const e of entries) {
    if (e.marker === "@cert-authority") continue; // certificates are not supported; ignore CA lines
    let hit = false;
    let negated = false;
    for (const p of e.patterns) {
      if (p.startsWith("!")) { if (patternMatches(p.slice(1), host, port)) negated = true; }
      else if (patternMatches(p, host, port)) hit = true;
    }
    if (!hit || negated) continue;
    (e.marker === "@revoked" ? revoked : keys).push(normaliseKey(e.key));
  }
  return { keys, revoked };
}

export type HostKeyDecision =
  | { action: "accept"; source: "pinned" | "known_hosts" }
  /** First contact: trust and pin this key. */
  | { action: "pin" }
  | { action: "reject"; message: string };

export interface HostKeyInput {
  host: string;
  port: number;
  /** The key the host presented, "type base64". */
  presented: string;
  /** Key pinned in the cluster state for this host:port, if any. */
  pinned?: string;
  /** Entries of the known_hosts file from provider.known_hosts_file, if configured. */
  knownHosts?: KnownHostEntry[];
  /** Name of that file, for messages. */
  knownHostsFile?: string;
  /** Refuse hosts that are neither pinned nor in known_hosts (no trust on first use). */
  strict?: boolean;
  /** Name of the state file the pin lives in, for the message that says how to re-trust. */
  stateFile?: string;
}

/**
 * Trust on first use, with a known_hosts file taking precedence when it names the host:
 * - a revoked key is refused;
 * - known_hosts lists this host: the presented key must be one of its keys;
 * - else a pinned key must equal the presented one (a change stops everything);
 * - else the key is pinned (unless strict).
 */
export function decideHostKey(i: HostKeyInput): HostKeyDecision {
  const presented = normaliseKey(i.presented);
  const where = i.port === 22 ? i.host : `${i.host}:${i.port}`;
  const fp = fingerprint(presented);
  if (i.knownHosts) {
    const { keys, revoked } = knownKeysFor(i.knownHosts, i.host, i.port);
    if (revoked.includes(presented)) {
      return { action: "reject", message: `The host key of ${where} (${fp}) is marked @revoked in ${i.knownHostsFile ?? "known_hosts"}; refusing to connect.` };
    }
    if (keys.length > 0) {
      if (keys.includes(presented)) return { action: "accept", source: "known_hosts" };
      return {
        action: "reject",
        message: `The host key of ${where} does not match ${i.knownHostsFile ?? "known_hosts"} (it presented ${fp}): the host was reinstalled or someone is intercepting the connection; if the change is expected, update that file.`,
      };
    }
  }
  if (i.pinned) {
    if (normaliseKey(i.pinned) === presented) return { action: "accept", source: "pinned" };
    return {
      action: "reject",
      message: `The host key of ${where} has changed since tray first connected (was ${fingerprint(i.pinned)}, now ${fp}): the host was reinstalled or someone is intercepting the connection; if the change is expected, remove "${hostKeyId(i.host, i.port)}" from hostKeys in ${i.stateFile ?? "the cluster's state.json"} and run the command again.`,
    };
  }
  if (i.strict) {
    return {
      action: "reject",
      message: i.knownHostsFile
        ? `The host key of ${where} (${fp}) is not in ${i.knownHostsFile} and tray has none pinned for it; add it there, or run \`tray up\` to trust it on first use.`
        : `tray has no pinned host key for ${where} (it presented ${fp}); run \`tray up\` first, which pins the keys of the cluster's hosts.`,
    };
  }
  return { action: "pin" };
}

/** SSH algorithm names that can verify a key of this type (for offering only known key types). */
export function algorithmsForKeyType(type: string): string[] {
  if (type === "ssh-rsa") return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
  return [type];
}
