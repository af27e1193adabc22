// Real "cloud instances" for the emulator: each one is a network namespace running its own
// sshd, with the image's login user (ubuntu / debian / azureuser / any GCE ssh-keys user)
// carrying exactly the public key that the cloud request installed.
//
// Same machinery as scripts/testhosts.sh (the ssh engineer's batch script for bare-metal
// hosts), but one host at a time and on demand: a cloud creates and deletes instances
// individually, with a key and a user chosen per request, which `testhosts.sh up N` cannot do.
// Parameters never collide with the bare-metal hosts (10.77.0 / trbr0 / tray-h / trv):
//   private addresses 10.78.0.(10+slot), "public" addresses 10.78.1.(10+slot), both on eth0
//   of namespace tray-c<slot>, bridge trbr1 (root side 10.78.0.1 and 10.78.1.1), veth trc<slot>.
// Slots are claimed with O_EXCL lock files holding the owner's pid, so several test processes
// can run emulators at the same time; a slot whose owner died is reclaimed (and its namespace
// removed) by the next claimer.
//
// Inside each host's private mount + UTS namespace, /home, /root, /run and /var/log are bound
// from $BASE/c<slot>/..., /tmp and /dev/shm are fresh tmpfs. The image's login user (ubuntu,
// azureuser, ...) is a real account (useradd, no password, home /home/<user> which each host
// backs with its own directory), as scripts/testhosts.sh does for its `tray` user. (Binding
// per-host copies over /etc/passwd does not work: any useradd on the machine renames
// /etc/passwd, and the kernel then detaches such file mounts in every namespace.)
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export const NET = process.env.TRAY_CLOUD_NET ?? "10.78.0";
export const PUB_NET = process.env.TRAY_CLOUD_PUB_NET ?? "10.78.1";
const BR = "trbr1";
const NSP = "tray-c";
const VP = "trc";
const BASE = process.env.TRAY_CLOUD_BASE ?? "/var/tmp/tray-cloudhosts";
const MAX_SLOTS = 200;

export interface HostSpec {
  /** Login user of the "image" (ubuntu, debian, azureuser, ...). */
  user: string;
  /** Lines for ~user/.ssh/authorized_keys. */
  authorizedKeys: string[];
  hostname: string;
  /** false: the namespace exists but sshd never starts (an instance that never becomes reachable). */
  reachable?: boolean;
}

export interface Host {
  slot: number;
  ns: string;
  privateIp: string;
  publicIp: string;
  user: string;
  hostname: string;
  dir: string;
  /** "ssh-ed25519 AAAA..." */
  hostKey: string;
}

function sh(script: string, env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string }> {
  return run("/bin/bash", ["-c", "set -euo pipefail\n" + script], {
    env: { ...process.env, ...env },
    maxBuffer: 16 << 20,
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e: any) {
    return e.code === "EPERM";
  }
}

function slotLock(slot: number): string {
  return path.join(BASE, "slots", String(slot));
}

/** Claim a free slot (cross-process); reclaims slots whose owning process has died. */
async function claimSlot(): Promise<number> {
  fs.mkdirSync(path.join(BASE, "slots"), { recursive: true });
  for (let slot = 1; slot <= MAX_SLOTS; slot++) {
    const lock = slotLock(slot);
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: "wx" });
      return slot;
    } catch (e: any) {
      if (e.code !== "EEXIST") throw e;
      let owner = 0;
      let age = 0;
      try {
        owner = Number(fs.readFileSync(lock, "utf8").trim() || 0);
        age = Date.now() - fs.statSync(lock).mtimeMs;
      } catch {
        continue; // released or taken over meanwhile
      }
      if (owner && pidAlive(owner)) continue;
      if (!owner && age < 10_000) continue; // just created by another process, pid not written yet
      // stale: remove its namespace, then try to take it over (rename is atomic)
      const mine = `${lock}.${process.pid}`;
      try {
        fs.renameSync(lock, mine);
      } catch {
        continue;
      }
      await removeSlot(slot).catch(() => {});
      fs.rmSync(mine, { force: true });
      try {
        fs.writeFileSync(lock, String(process.pid), { flag: "wx" });
        return slot;
      } catch {
        continue;
      }
    }
  }
  throw new Error("emulator: no free host slot");
}

async function ensureBridge(): Promise<void> {
  await sh(
    `exec 9>"${BASE}/bridge.lock"; flock 9
     ip link show ${BR} >/dev/null 2>&1 || ip link add ${BR} type bridge
     grep -q "inet ${NET}.1/24" <<<"$(ip addr show dev ${BR})" || ip addr add ${NET}.1/24 dev ${BR}
     grep -q "inet ${PUB_NET}.1/24" <<<"$(ip addr show dev ${BR})" || ip addr add ${PUB_NET}.1/24 dev ${BR}
     ip link set ${BR} up`,
  );
}

async function removeSlot(slot: number): Promise<void> {
  const ns = NSP + slot;
  await sh(
    `pids=$(ip netns pids ${ns} 2>/dev/null || true)
     if [ -n "$pids" ]; then kill $pids 2>/dev/null || true
       for _ in $(seq 30); do pids=$(ip netns pids ${ns} 2>/dev/null || true); [ -z "$pids" ] && break; sleep 0.1; done
       [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
     fi
     ip netns del ${ns} 2>/dev/null || true
     ip link del ${VP}${slot} 2>/dev/null || true
     rm -rf "${BASE}/c${slot}"`,
  );
}

/** Create the login user if missing (serialised: useradd locks /etc/passwd and fails when busy). */
async function ensureUser(user: string): Promise<void> {
  await sh(
    `exec 9>"${BASE}/useradd.lock"; flock 9
     if ! id -u ${user} >/dev/null 2>&1; then
       for _ in 1 2 3 4 5 6 7 8 9 10; do
         useradd -M -d /home/${user} -s /bin/bash -U ${user} 2>/dev/null && break
         id -u ${user} >/dev/null 2>&1 && break
         sleep 0.3
       done
     fi
     id -u ${user} >/dev/null
     # a new account is locked ("!"), which sshd refuses even for keys: no password instead
     if [ "$(getent shadow ${user} | cut -d: -f2)" != "*" ]; then usermod -p '*' ${user}; fi`,
  );
}

/** Remove hosts whose owning process died (a test killed mid-run), once per process. */
let reaped = false;
async function reapStale(): Promise<void> {
  if (reaped) return;
  reaped = true;
  let names: string[] = [];
  try {
    names = fs.readdirSync(path.join(BASE, "slots")).filter((n) => /^\d+$/.test(n));
  } catch {
    return;
  }
  for (const n of names) {
    const lock = slotLock(Number(n));
    try {
      const owner = Number(fs.readFileSync(lock, "utf8").trim() || 0);
      const age = Date.now() - fs.statSync(lock).mtimeMs;
      if ((owner && pidAlive(owner)) || (!owner && age < 10_000)) continue;
      const mine = `${lock}.${process.pid}`;
      fs.renameSync(lock, mine);
      await removeSlot(Number(n)).catch(() => {});
      fs.rmSync(mine, { force: true });
    } catch {
      // taken over or released meanwhile
    }
  }
}

export class HostPool {
  private hosts = new Map<number, Host>();

  /** Create one host; resolves once sshd answers on port 22 (or at once when unreachable). */
  async create(spec: HostSpec): Promise<Host> {
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(spec.user)) throw new Error(`emulator: bad user ${spec.user}`);
    fs.mkdirSync(BASE, { recursive: true });
    await reapStale();
    await ensureBridge();
    const slot = await claimSlot();
    const ns = NSP + slot;
    const d = path.join(BASE, `c${slot}`);
    const host: Host = {
      slot,
      ns,
      privateIp: `${NET}.${10 + slot}`,
      publicIp: `${PUB_NET}.${10 + slot}`,
      user: spec.user,
      hostname: spec.hostname.replace(/[^A-Za-z0-9-]/g, "-").slice(0, 63),
      dir: d,
      hostKey: "",
    };
    this.hosts.set(slot, host);
    try {
      fs.rmSync(d, { recursive: true, force: true });
      await ensureUser(spec.user);
      const uh = path.join(d, "home", spec.user);
      for (const sub of ["root", "run/sshd", "log", path.join("home", spec.user, ".ssh")]) {
        fs.mkdirSync(path.join(d, sub), { recursive: true });
      }
      fs.writeFileSync(path.join(uh, ".ssh", "authorized_keys"), spec.authorizedKeys.join("\n") + "\n");
      for (const f of [".bashrc", ".profile"]) {
        try {
          fs.copyFileSync(path.join("/etc/skel", f), path.join(uh, f));
        } catch {}
      }
      fs.writeFileSync(
        path.join(d, "sshd_config"),
        `ListenAddress ${host.privateIp}:22
ListenAddress ${host.publicIp}:22
HostKey ${d}/ssh_host_ed25519_key
PidFile ${d}/sshd.pid
PermitRootLogin no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
PrintMotd no
PrintLastLog no
AllowTcpForwarding yes
AcceptEnv LANG LC_* TRAY_*
MaxStartups 100:30:200
MaxSessions 64
ClientAliveInterval 15
LogLevel VERBOSE
`,
      );
      await sh(
        `d="${d}"; ns=${ns}; veth=${VP}${slot}
         ssh-keygen -q -t ed25519 -N '' -C "$ns" -f "$d/ssh_host_ed25519_key"
         chown -R "${spec.user}:" "$d/home/${spec.user}"
         chmod 700 "$d/home/${spec.user}" "$d/home/${spec.user}/.ssh"; chmod 600 "$d/home/${spec.user}/.ssh/authorized_keys"
         : > "$d/run/utmp"; : > "$d/log/wtmp"; : > "$d/log/lastlog"
         ip netns del $ns 2>/dev/null || true; ip link del $veth 2>/dev/null || true
         ip netns add $ns
         ip link add $veth type veth peer name \${veth}p
         ip link set \${veth}p netns $ns
         ip -n $ns link set \${veth}p name eth0
         ip link set $veth master ${BR}
         ip link set $veth up
         ip -n $ns link set lo up
         ip -n $ns addr add ${host.privateIp}/24 dev eth0
         ip -n $ns addr add ${host.publicIp}/24 dev eth0
         ip -n $ns link set eth0 up
         ip -n $ns route replace default via ${NET}.1 dev eth0`,
      );
      host.hostKey = fs.readFileSync(path.join(d, "ssh_host_ed25519_key.pub"), "utf8").split(" ").slice(0, 2).join(" ");
      if (spec.reachable === false) return host;
      await sh(
        `d="${d}"
         ip netns exec ${ns} unshare --mount --uts --propagation private /bin/sh -ec "
           hostname '${host.hostname}'
           mount --bind '$d/home' /home
           mount --bind '$d/root' /root
           mount --bind '$d/run' /run
           mount --bind '$d/log' /var/log
           mount -t tmpfs -o mode=1777 tmpfs /tmp
           mount -t tmpfs -o mode=1777 tmpfs /dev/shm
           /usr/sbin/sshd -t -f '$d/sshd_config'
           exec /usr/sbin/sshd -f '$d/sshd_config' -E '$d/sshd.log'
         "
         for _ in $(seq 100); do (exec 3<>/dev/tcp/${host.privateIp}/22) 2>/dev/null && exit 0; sleep 0.05; done
         echo "sshd on ${ns} did not answer; see $d/sshd.log" >&2; exit 1`,
      );
      return host;
    } catch (e) {
      await this.destroy(host).catch(() => {});
      throw e;
    }
  }

  async destroy(host: Host): Promise<void> {
    await removeSlot(host.slot);
    this.hosts.delete(host.slot);
    fs.rmSync(slotLock(host.slot), { force: true });
  }

  async destroyAll(): Promise<void> {
    await Promise.all([...this.hosts.values()].map((h) => this.destroy(h).catch(() => {})));
  }

  list(): Host[] {
    return [...this.hosts.values()];
  }
}
