// Small helpers shared by the store and native tests.

/** Bytes that differ at every 4 KiB page and within it, so a misplaced chunk shows. */
export function pattern(n: number, salt = 0): Buffer {
  const b = Buffer.alloc(n + 3);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE((i * 2654435761 + salt) >>> 0, i);
  return b.subarray(0, n);
}

/** Resolves once `cond()` holds, polling every 5 ms; fails after `ms` naming `what`. */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
