// A port for a local head that outgoing connections will not take. A head listening on an
// ephemeral port (127.0.0.1:0) could lose it when killed and started again: meanwhile an
// outgoing connection on this machine got that number as its source port, the new head had to
// take another, and the node agents still dialling the old address never rejoined. The kernel
// hands out source ports only from its ephemeral range, so a port below it stays ours to retake.
import fs from "node:fs";
import net from "node:net";

/** The first port of the kernel's ephemeral range (Linux's default when it cannot be read). */
export function ephemeralRangeStart(): number {
  try {
    const lo = Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    if (Number.isInteger(lo) && lo > 2048) return lo;
  } catch {
    // not Linux, or no /proc: the usual default
  }
  return 32768;
}

/**
 * A free loopback port just below the ephemeral range, or 0 (let the kernel pick) if none was
 * found in `tries` picks. `range` ([low, high]) is for tests.
 */
export async function stablePort(tries = 20, range?: [number, number]): Promise<number> {
  const hi = range?.[1] ?? ephemeralRangeStart() - 1;
  const lo = range?.[0] ?? Math.max(1025, hi - 10_000);
  for (let i = 0; i < tries; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo + 1));
    if (await isFree(port)) return port;
  }
  return 0;
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen({ port, host: "127.0.0.1", exclusive: true }, () => s.close(() => resolve(true)));
  });
}
