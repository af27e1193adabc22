// Turn what ssh2 and the socket layer throw into one sentence a user can act on. Pure: the
// client passes the error and what it was trying to do.
import { UserError } from "../errors.js";

export interface ConnectContext {
  host: string;
  port: number;
  user: string;
  /** Path of the private key tried (as the user wrote it or expanded), if any. */
  keyPath?: string;
  /** An ssh-agent was offered too. */
  agent?: boolean;
  timeoutMs: number;
  /** Set by the host verifier when it refused the key: that sentence wins. */
  hostKeyMessage?: string;
}

function where(c: ConnectContext): string {
  return c.port === 22 ? c.host : `${c.host}:${c.port}`;
}

function credentials(c: ConnectContext): string {
  const parts: string[] = [];
  if (c.keyPath) parts.push(`key ${c.keyPath}`);
  if (c.agent) parts.push("the keys of ssh-agent (SSH_AUTH_SOCK)");
  return parts.length ? parts.join(" and ") : "no key";
}

/** Map a connection-phase error to a UserError (one sentence naming host and cause). */
export function mapConnectError(err: unknown, c: ConnectContext): UserError {
  const e = err as { code?: string; level?: string; message?: string };
  const msg = String(e?.message ?? err);
  const w = where(c);
  if (c.hostKeyMessage) return new UserError(c.hostKeyMessage, { cause: err });
  switch (e?.code) {
    case "ECONNREFUSED":
      return new UserError(`Cannot connect to ${w}: connection refused (is sshd running and listening on port ${c.port}?).`, { cause: err });
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EHOSTDOWN":
    case "ENETDOWN":
      return new UserError(`Cannot reach ${w}: no route to the host (${e.code}); check that it is up and its address is right.`, { cause: err });
    case "ETIMEDOUT":
      return new UserError(`Cannot reach ${w}: the connection timed out; check that the host is up and that a firewall lets port ${c.port} through.`, { cause: err });
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return new UserError(`Cannot resolve the host name ${c.host}; check the address in the cluster YAML.`, { cause: err });
    case "ECONNRESET":
      return new UserError(`${w} closed the connection during the SSH handshake (ECONNRESET); sshd may be refusing this client (MaxStartups, tcp wrappers) or restarting.`, { cause: err });
  }
  if (e?.level === "client-timeout" || /timed out/i.test(msg)) {
    return new UserError(`Cannot reach ${w}: no SSH answer within ${Math.round(c.timeoutMs / 1000)} s; check that the host is up and that a firewall lets port ${c.port} through.`, { cause: err });
  }
  if (e?.level === "client-authentication" || /authentication methods failed/i.test(msg)) {
    return new UserError(
      `${w} refused to log in user "${c.user}" with ${credentials(c)}: check auth.ssh_user and that this key's public half is in ~${c.user}/.ssh/authorized_keys on the host.`,
      { cause: err },
    );
  }
  if (/encrypted private .*key.*no passphrase|passphrase/i.test(msg)) {
    return new UserError(`The private key ${c.keyPath ?? ""} is protected by a passphrase; load it into ssh-agent (ssh-add ${c.keyPath ?? ""}) so tray can use it.`, { cause: err });
  }
  if (/Cannot parse privateKey|Unsupported key format|privateKey value/i.test(msg)) {
    return new UserError(`The file ${c.keyPath ?? "(auth.ssh_private_key)"} is not a private key ssh2 can read (${msg}).`, { cause: err });
  }
  if (/Host denied/i.test(msg)) {
    return new UserError(`${w}'s host key was refused.`, { cause: err });
  }
  if (/handshake|kex|algorithm/i.test(msg)) {
    return new UserError(`The SSH handshake with ${w} failed: ${msg}.`, { cause: err });
  }
  return new UserError(`Cannot connect to ${w} as "${c.user}": ${msg}.`, { cause: err });
}

/** Errors once connected (exec/sftp on a session that dropped). */
export function mapSessionError(err: unknown, host: string, what: string): UserError {
  const e = err as { code?: string | number; message?: string };
  const msg = String(e?.message ?? err);
  if (/Not connected|No response from server|ECONNRESET|socket|Keepalive timeout/i.test(msg)) {
    return new UserError(`Lost the SSH connection to ${host} while ${what} (${msg}).`, { cause: err });
  }
  if (e?.code === 4 || /Failure/.test(msg)) {
    return new UserError(`${host}: ${what} failed (${msg}); the disk may be full or the path not writable.`, { cause: err });
  }
  if (e?.code === 3 || /Permission denied/i.test(msg)) {
    return new UserError(`${host}: ${what} failed: permission denied.`, { cause: err });
  }
  if (e?.code === 2 || /No such file/i.test(msg)) {
    return new UserError(`${host}: ${what} failed: no such file or directory.`, { cause: err });
  }
  return new UserError(`${host}: ${what} failed: ${msg}.`, { cause: err });
}
