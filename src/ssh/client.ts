// A small wrapper over ssh2 for everything tray does on a host: connect (key read locally and
// never copied; ssh-agent when SSH_AUTH_SOCK is set), verify the host key (hostkeys.ts), run
// commands with exit codes and output, copy files over SFTP, open a PTY shell, and tunnel a
// TCP connection (forwardOut). Every failure a user can fix becomes a one-sentence UserError.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import ssh2, { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper } from "ssh2";
import { UserError } from "../errors.js";
import { mapConnectError, mapSessionError, type ConnectContext } from "./errors.js";
import { algorithmsForKeyType, decideHostKey, formatHostKey, knownKeysFor, readKnownHosts, type KnownHostEntry } from "./hostkeys.js";

export interface HostKeyPolicy {
  /** Key pinned for this host:port ("type base64"), from ClusterState.hostKeys. */
  pinned?: string;
  /** provider.known_hosts_file: keys listed there are trusted (and required) for their hosts. */
  knownHostsFile?: string;
  /** Refuse hosts neither pinned nor in known_hosts. */
  strict?: boolean;
  /** For the "host key changed" message. */
  stateFile?: string;
}

export interface ConnectOptions {
  host: string;
  port?: number;
  user: string;
  /** auth.ssh_private_key; read on this machine only. */
  privateKeyPath?: string;
  /** Use ssh-agent at SSH_AUTH_SOCK (default: when the variable is set). */
  useAgent?: boolean;
  /** Handshake + TCP connect deadline (default 10 s, env TRAY_SSH_TIMEOUT_MS). */
  timeoutMs?: number;
  hostKeys?: HostKeyPolicy;
  /** Keepalive interval (default 5 s, env TRAY_SSH_KEEPALIVE_MS); dead after 3 missed. */
  keepaliveMs?: number;
}

export interface ExecOptions {
  /** Written to the command's stdin, then stdin is closed. */
  stdin?: string | Buffer;
  /** Live output (for progress and `tray exec`). */
  onData?: (chunk: Buffer, stream: "stdout" | "stderr") => void;
  /** Keep at most this many bytes of each stream (the tail), default 1 MiB. */
  maxOutput?: number;
  pty?: boolean;
  /** How to name the command in messages (default: the command itself). */
  label?: string;
  /** Give up after this long (the remote process gets SIGKILL via the closed channel). */
  timeoutMs?: number;
}

export interface ExecResult {
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

export function expandHome(p: string): string {
  if (p === "~") return os.homedir();
  if (p.startsWith("~/")) return path.join(os.homedir(), p.slice(2));
  return p;
}

function defaultTimeout(): number {
  const env = Number(process.env.TRAY_SSH_TIMEOUT_MS);
  return Number.isFinite(env) && env > 0 ? env : 10_000;
}

/** Quote a string for a POSIX shell. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_\/.:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export class SshConnection {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** The host key presented, "type base64". */
  hostKey = "";
  /** True when this connection pinned the key (first contact). */
  firstContact = false;
  private sftpP?: Promise<SFTPWrapper>;
  private homeP?: Promise<string>;
  private closed = false;
  private closeListeners: Array<(err?: Error) => void> = [];

  private constructor(private readonly client: Client, opts: ConnectOptions) {
    this.host = opts.host;
    this.port = opts.port ?? 22;
    this.user = opts.user;
  }

  /** "user@host" or "user@host:port" for messages. */
  get where(): string {
    return this.port === 22 ? this.host : `${this.host}:${this.port}`;
  }

  static async connect(opts: ConnectOptions): Promise<SshConnection> {
    const port = opts.port ?? 22;
    const timeoutMs = opts.timeoutMs ?? defaultTimeout();
    const agentSock = opts.useAgent === false ? undefined : process.env.SSH_AUTH_SOCK || undefined;
    const keyPath = opts.privateKeyPath ? expandHome(opts.privateKeyPath) : undefined;
    const ctx: ConnectContext = { host: opts.host, port, user: opts.user, timeoutMs, agent: !!agentSock, ...(keyPath ? { keyPath } : {}) };

    let privateKey: Buffer | undefined;
    if (keyPath) {
      try {
        privateKey = fs.readFileSync(keyPath);
      } catch (e: any) {
        throw new UserError(`Cannot read the private key ${keyPath} (auth.ssh_private_key): ${e.code === "ENOENT" ? "no such file" : e.message}.`);
      }
    }
    if (privateKey && agentSock) {
      // A passphrase-protected key file cannot be used directly; the agent (which holds the
      // unlocked key, after ssh-add) logs in instead.
      const parsed = ssh2.utils.parseKey(privateKey);
      if (parsed instanceof Error && /passphrase/i.test(parsed.message)) privateKey = undefined;
    }
    if (!privateKey && !agentSock) {
      throw new UserError(`No way to log in to ${opts.host}: set auth.ssh_private_key in the cluster YAML or start ssh-agent (SSH_AUTH_SOCK).`);
    }

    let known: KnownHostEntry[] | undefined;
    const khFile = opts.hostKeys?.knownHostsFile ? expandHome(opts.hostKeys.knownHostsFile) : undefined;
    if (khFile) {
      try {
        known = readKnownHosts(khFile);
      } catch (e: any) {
        throw new UserError(`Cannot read the known_hosts file ${khFile} (provider.known_hosts_file): ${e.message}.`);
      }
    }
    // Offer only the key types we already know for this host, so a host with several keys
    // presents the one we can check (as OpenSSH does).
    const knownTypes = new Set<string>();
    if (known) for (const k of knownKeysFor(known, opts.host, port).keys) knownTypes.add(k.split(" ")[0]!);
    if (opts.hostKeys?.pinned && knownTypes.size === 0) knownTypes.add(opts.hostKeys.pinned.split(" ")[0]!);

    const client = new Client();
    const conn = new SshConnection(client, opts);
    const cfg: ConnectConfig = {
      host: opts.host,
      port,
      username: opts.user,
      readyTimeout: timeoutMs,
      keepaliveInterval: opts.keepaliveMs ?? (Number(process.env.TRAY_SSH_KEEPALIVE_MS) || 5000),
      keepaliveCountMax: 3,
      ...(privateKey ? { privateKey } : {}),
      ...(agentSock ? { agent: agentSock } : {}),
      hostVerifier: (key: Buffer) => {
        const presented = formatHostKey(key);
        conn.hostKey = presented;
        const d = decideHostKey({
          host: opts.host,
          port,
          presented,
          ...(opts.hostKeys?.pinned ? { pinned: opts.hostKeys.pinned } : {}),
          ...(known ? { knownHosts: known } : {}),
          ...(khFile ? { knownHostsFile: khFile } : {}),
          ...(opts.hostKeys?.strict ? { strict: true } : {}),
          ...(opts.hostKeys?.stateFile ? { stateFile: opts.hostKeys.stateFile } : {}),
        });
        if (d.action === "reject") {
          ctx.hostKeyMessage = d.message;
          return false;
        }
        conn.firstContact = d.action === "pin";
        return true;
      },
    };
    if (knownTypes.size > 0) {
      cfg.algorithms = { serverHostKey: [...knownTypes].flatMap(algorithmsForKeyType) as any };
    }

    await new Promise<void>((resolve, reject) => {
      let settled = false;
      // ssh2's readyTimeout starts after the TCP connect; bound the whole thing ourselves too.
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        client.destroy();
        reject(mapConnectError(Object.assign(new Error("Timed out while waiting for handshake"), { level: "client-timeout" }), ctx));
      }, timeoutMs + 500);
      client.once("ready", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.setNoDelay(true); // without it every exec round trip costs ~45 ms (Nagle + delayed ACK)
        resolve();
      });
      client.on("error", (err) => {
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          client.destroy();
          reject(mapConnectError(err, ctx));
          return;
        }
        conn.markClosed(err);
      });
      client.on("close", () => conn.markClosed());
      try {
        client.connect(cfg);
      } catch (err) {
        settled = true;
        clearTimeout(timer);
        reject(mapConnectError(err, ctx));
      }
    });
    return conn;
  }

  private markClosed(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.closeListeners.splice(0)) l(err);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  onClose(fn: (err?: Error) => void): void {
    if (this.closed) fn();
    else this.closeListeners.push(fn);
  }

  /** Run a command (through the login shell); resolves with its exit code and output. */
  exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const max = opts.maxOutput ?? 1 << 20;
    const label = short(opts.label ?? command);
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(mapSessionError(new Error("Not connected"), this.where, `running \`${label}\``));
      this.client.exec(command, opts.pty ? { pty: true } : {}, (err, ch) => {
        if (err) return reject(mapSessionError(err, this.where, `running \`${label}\``));
        const out: Buffer[] = [];
        const errs: Buffer[] = [];
        let outLen = 0;
        let errLen = 0;
        let code: number | null = null;
        let signal: string | undefined;
        let timer: NodeJS.Timeout | undefined;
        const keep = (list: Buffer[], len: number, b: Buffer): number => {
          list.push(b);
          len += b.length;
          while (len > max && list.length > 1) len -= list.shift()!.length;
          return len;
        };
        ch.on("data", (b: Buffer) => {
          outLen = keep(out, outLen, b);
          opts.onData?.(b, "stdout");
        });
        ch.stderr.on("data", (b: Buffer) => {
          errLen = keep(errs, errLen, b);
          opts.onData?.(b, "stderr");
        });
        ch.on("exit", (c: number | null, sig?: string) => {
          code = c ?? null;
          if (sig) signal = sig;
        });
        const onDrop = () => ch.close();
        this.onClose(onDrop);
        ch.on("close", () => {
          if (timer) clearTimeout(timer);
          this.closeListeners = this.closeListeners.filter((l) => l !== onDrop);
          if (code === null && !signal && this.closed) {
            reject(mapSessionError(new Error("Not connected"), this.where, `running \`${label}\``));
            return;
          }
          resolve({ code, ...(signal ? { signal } : {}), stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(errs).toString("utf8") });
        });
        if (opts.timeoutMs) {
          timer = setTimeout(() => {
            signal = "TIMEOUT";
            try { ch.signal("KILL"); } catch { /* not supported by every server */ }
            ch.close();
          }, opts.timeoutMs);
        }
        if (opts.stdin !== undefined) ch.end(opts.stdin);
        else ch.end();
      });
    });
  }

  /** Run a command that must succeed; returns its stdout. */
  async run(command: string, what?: string, opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(command, opts);
    if (r.code !== 0) {
      const tail = (r.stderr || r.stdout).trim().split("\n").slice(-5).join(" / ");
      throw new UserError(
        `${this.where}: ${what ?? `\`${short(command)}\``} failed with ${r.signal ? `signal ${r.signal}` : `exit code ${r.code}`}${tail ? `: ${tail}` : ""}.`,
      );
    }
    return r.stdout;
  }

  /** The login user's home directory on the host. */
  home(): Promise<string> {
    if (!this.homeP) {
      this.homeP = this.run(`sh -c 'printf %s "$HOME"'`, "reading $HOME").then((h) => {
        if (!h.startsWith("/")) throw new UserError(`${this.where}: the home directory of "${this.user}" is not set ($HOME=${JSON.stringify(h)}).`);
        return h;
      });
      this.homeP.catch(() => { this.homeP = undefined; });
    }
    return this.homeP;
  }

  sftp(): Promise<SFTPWrapper> {
    if (!this.sftpP) {
      this.sftpP = new Promise((resolve, reject) => {
        this.client.sftp((err, s) => (err ? reject(mapSessionError(err, this.where, "opening SFTP (is the sftp subsystem enabled in sshd_config?)")) : resolve(s)));
      });
      this.sftpP.catch(() => { this.sftpP = undefined; });
    }
    return this.sftpP;
  }

  /** Copy a local file (path) or bytes to `remotePath` (absolute), with `mode`. */
  async upload(src: string | Buffer, remotePath: string, mode = 0o644): Promise<void> {
    const sftp = await this.sftp();
    const what = `uploading ${typeof src === "string" ? src : "data"} to ${remotePath}`;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(mapSessionError(err, this.where, what)) : resolve());
      if (typeof src === "string") sftp.fastPut(src, remotePath, { mode, concurrency: 16, chunkSize: 64 * 1024 }, done);
      else sftp.writeFile(remotePath, src, { mode }, done);
    });
    // the mode given at creation does not apply to an existing file
    await new Promise<void>((resolve, reject) => sftp.chmod(remotePath, mode, (err) => (err ? reject(mapSessionError(err, this.where, `chmod ${remotePath}`)) : resolve())));
  }

  async download(remotePath: string, localPath: string): Promise<void> {
    const sftp = await this.sftp();
    await new Promise<void>((resolve, reject) =>
      sftp.fastGet(remotePath, localPath, { concurrency: 16, chunkSize: 64 * 1024 }, (err) => (err ? reject(mapSessionError(err, this.where, `downloading ${remotePath}`)) : resolve())),
    );
  }

  /** stat on the host: undefined when missing. */
  async stat(remotePath: string): Promise<{ isDir: boolean; size: number; mode: number } | undefined> {
    const sftp = await this.sftp();
    return new Promise((resolve, reject) =>
      sftp.stat(remotePath, (err: any, st) => {
        if (err) return err.code === 2 ? resolve(undefined) : reject(mapSessionError(err, this.where, `stat ${remotePath}`));
        resolve({ isDir: st.isDirectory(), size: st.size, mode: st.mode & 0o7777 });
      }),
    );
  }

  async readdir(remotePath: string): Promise<Array<{ name: string; isDir: boolean; mode: number }>> {
    const sftp = await this.sftp();
    return new Promise((resolve, reject) =>
      sftp.readdir(remotePath, (err, list) => {
        if (err) return reject(mapSessionError(err, this.where, `listing ${remotePath}`));
        resolve(list.map((e) => ({ name: e.filename, isDir: e.attrs.isDirectory(), mode: e.attrs.mode & 0o7777 })));
      }),
    );
  }

  async mkdirp(remotePath: string, mode = 0o755): Promise<void> {
    await this.run(`sh -c ${shq(`mkdir -p -m ${mode.toString(8)} ${shq(remotePath)}`)}`, `creating ${remotePath}`);
  }

  /** Interactive shell with a PTY (for `tray attach`). */
  shell(win: { rows: number; cols: number; term?: string }): Promise<ClientChannel> {
    return new Promise((resolve, reject) =>
      this.client.shell({ term: win.term ?? "xterm-256color", rows: win.rows, cols: win.cols }, (err, ch) =>
        err ? reject(mapSessionError(err, this.where, "opening a shell")) : resolve(ch),
      ),
    );
  }

  /** A TCP connection from the host to host:port (e.g. the head's API on its private address). */
  forwardOut(toHost: string, toPort: number): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(mapSessionError(new Error("Not connected"), this.where, `tunnelling to ${toHost}:${toPort}`));
      this.client.forwardOut("127.0.0.1", 0, toHost, toPort, (err, ch) => {
        if (err) return reject(new UserError(`${this.where} could not open a tunnel to ${toHost}:${toPort} (${err.message}); is the head agent running and is AllowTcpForwarding on?`, { cause: err }));
        resolve(ch);
      });
    });
  }

  close(): void {
    this.closed = true;
    try { this.client.end(); } catch { /* already gone */ }
  }
}

function short(cmd: string): string {
  const one = cmd.replace(/\s+/g, " ").trim();
  return one.length > 80 ? one.slice(0, 77) + "..." : one;
}
