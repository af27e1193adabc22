// Real sshd hosts in network namespaces for e2e tests (scripts/testhosts.sh does the work).
// Needs root, `ip netns` and openssh-server; `testHostsAvailable()` says whether they can run
// here, so a test file can skip with a reason instead of failing.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../scripts/testhosts.sh");

export interface TestHost {
  name: string; // h1, h2 ...
  netns: string;
  host: string; // address on the bridge
  port: number;
  /** root login */
  username: string;
  /** the non-root login present on every host */
  user: string;
  /** this host's folder on the machine running the tests (homes: dir/root, dir/home/<user>) */
  dir: string;
  privateKeyPath: string;
  hostKey: string;
  sshdPid: number;
}

export interface TestHostsOptions {
  /** first 3 octets, default 10.77.0 */
  net?: string;
  bridge?: string;
  nsPrefix?: string;
  vethPrefix?: string;
  user?: string;
  base?: string;
}

export class TestHosts {
  readonly env: NodeJS.ProcessEnv;
  readonly base: string;
  readonly net: string;
  hosts: TestHost[] = [];

  constructor(readonly o: TestHostsOptions = {}) {
    const nsp = o.nsPrefix ?? "tray-h";
    this.net = o.net ?? "10.77.0";
    this.base = o.base ?? `/var/tmp/tray-testhosts-${nsp}`;
    this.env = {
      ...process.env,
      TRAY_NET: this.net,
      TRAY_BR: o.bridge ?? "trbr0",
      TRAY_NSP: nsp,
      TRAY_VP: o.vethPrefix ?? "trv",
      TRAY_USER: o.user ?? "tray",
      TRAY_BASE: this.base,
    };
  }

  private sh(...args: string[]): string {
    return execFileSync("bash", [SCRIPT, ...args], { env: this.env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  }

  /** Create (or repair) hosts 1..n. */
  up(n: number): TestHost[] {
    this.sh("up", String(n));
    this.hosts = JSON.parse(fs.readFileSync(path.join(this.base, "hosts.json"), "utf8")) as TestHost[];
    return this.hosts;
  }

  /** Remove every namespace and the bridge (keys stay unless purge). */
  down(purge = false): void {
    this.sh("down", ...(purge ? ["--purge"] : []));
  }

  /** Take host i's network down (1-based): packets to it are dropped, connections hang. */
  cut(i: number): void {
    this.sh("cut", String(i));
  }

  heal(i: number): void {
    this.sh("heal", String(i));
  }

  /** SIGKILL every process of host i (sshd included). */
  kill(i: number): void {
    this.sh("kill", String(i));
  }

  /** An address on the bridge's subnet that no host answers (connections time out). */
  unusedAddress(): string {
    return `${this.net}.250`;
  }

  /** Run a shell command inside host i's namespaces (network, mount, uts: what sshd sees), as root. */
  inHost(i: number, command: string): { code: number; stdout: string; stderr: string } {
    const h = this.hosts[i - 1];
    if (!h) throw new Error(`no test host ${i}`);
    const pid = Number(fs.readFileSync(path.join(h.dir, "sshd.pid"), "utf8"));
    const r = spawnSync("nsenter", ["-t", String(pid), "-n", "-m", "-u", "--", "sh", "-c", command], { encoding: "utf8" });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** Home folder of `user` on host i, as seen from this machine. */
  homeOf(i: number, user: "root" | string): string {
    const h = this.hosts[i - 1]!;
    return user === "root" ? path.join(h.dir, "root") : path.join(h.dir, "home", user);
  }

  /** Replace host i's host key (as if reinstalled) and restart its sshd. */
  rekey(i: number): void {
    const h = this.hosts[i - 1]!;
    for (const f of ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]) fs.rmSync(path.join(h.dir, f), { force: true });
    try { process.kill(h.sshdPid, "SIGTERM"); } catch { /* gone */ }
    for (let k = 0; k < 50; k++) {
      try { process.kill(h.sshdPid, 0); } catch { break; }
      spawnSync("sleep", ["0.05"]);
    }
    this.up(this.hosts.length);
  }

  /** Processes in host i's network namespace (agents, workers, sshd). */
  pids(i: number): number[] {
    const h = this.hosts[i - 1]!;
    const r = spawnSync("ip", ["netns", "pids", h.netns], { encoding: "utf8" });
    return (r.stdout || "").split(/\s+/).filter(Boolean).map(Number);
  }

  /**
   * Remove tray's leftovers from host i's own /tmp and /dev/shm (they persist between runs).
   * Does nothing when the hosts share this machine's /tmp (a base under /tmp).
   */
  cleanTmp(i: number): void {
    if (this.base.startsWith("/tmp/")) return;
    this.inHost(i, "rm -rf /tmp/tray-* /dev/shm/tray-*");
  }

  /** SIGKILL the processes of host i (its network namespace only) whose command line contains `text`. */
  killMatching(i: number, text: string): number[] {
    const killed: number[] = [];
    for (const p of this.pids(i)) {
      let cmd = "";
      try { cmd = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " "); } catch { continue; }
      if (!cmd.includes(text)) continue;
      try { process.kill(p, "SIGKILL"); killed.push(p); } catch { /* gone */ }
    }
    return killed;
  }

  /** Command lines of the processes in host i other than sshd. */
  processes(i: number): string[] {
    return this.pids(i)
      .map((p) => { try { return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ").trim(); } catch { return ""; } })
      .filter((c) => c && !c.startsWith("sshd") && !c.includes("/usr/sbin/sshd"));
  }
}

/** Why e2e SSH tests cannot run here, or undefined when they can. */
export function testHostsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  if (!fs.existsSync("/usr/sbin/sshd")) return "needs openssh-server (/usr/sbin/sshd): apt-get install -y openssh-server";
  const r = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  if (r.status !== 0) return "needs iproute2 with `ip netns`";
  // a container without CAP_SYS_ADMIN lists namespaces but cannot make them
  const u = spawnSync("unshare", ["--net", "--mount", "--uts", "true"], { encoding: "utf8" });
  if (u.status !== 0) return `cannot create namespaces here (unshare: ${(u.stderr || u.error?.message || "").trim()})`;
  return undefined;
}
