#!/usr/bin/env node
// Physical limits of this machine, measured with the same primitives tray uses (Unix sockets
// between two Node processes, Buffer copies), so every tray figure can be read as a fraction
// of what the hardware and kernel allow. Prints one JSON line per limit:
//   {"metric":"limit_unix_rtt_one_at_a_time","value":45000,"unit":"msg/s"}
//
//   node bench/limits.mjs            # all limits (about 15 s)
//   node --expose-gc bench/limits.mjs   # steadier memcpy_fresh figures
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { median, round } from "./lib/stats.mjs";

const SELF = fileURLToPath(import.meta.url);
const MSG_BYTES = 32; // about a msgpack-encoded small task request
const REPS = 5;
/** The 100 MB stream is what the cross-node transfer is held to: as many samples as it takes. */
const STREAM_REPS = 9;
const RUN_MS = 400; // per repetition of the round-trip loops
const STREAM_BYTES = 100_000_000; // 100 MB, as in Ray's single_client_put_gigabytes
const COPY_BYTES = 100_000_000;

// ---- child side: the second process -------------------------------------------------------

async function serveEcho(path) {
  // Echo each chunk back as it arrives: the kernel, not this loop, decides the batching.
  const server = createServer((s) => s.on("data", (d) => s.write(d)));
  server.listen(path, () => process.stdout.write("ready\n"));
}

function sink(path, bytes) {
  // Reads into one reused buffer (no allocation per read), acknowledging every `bytes` received.
  let received = 0;
  const ack = Buffer.from([1]);
  const socket = connect({
    path,
    onread: {
      buffer: Buffer.allocUnsafe(1 << 20),
      callback(n) {
        received += n;
        while (received >= bytes) {
          received -= bytes;
          socket.write(ack);
        }
        return true;
      },
    },
  });
}

// ---- parent side ---------------------------------------------------------------------------

async function startChild(args) {
  const child = spawn(process.execPath, [SELF, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = await once(child.stdout, "data");
  if (!String(line).startsWith("ready")) throw new Error(`limits child said ${line}`);
  return child;
}

/**
 * Round trips with `window` messages in flight, each written by its own write() call (or `batch`
 * messages per call). `link.onBytes` receives the count of bytes echoed back.
 */
function roundTrips(link, { window, batch = 1, ms }) {
  const unit = Buffer.alloc(MSG_BYTES * batch, 7);
  const { socket } = link;
  return new Promise((resolve) => {
    let pendingBytes = 0;
    let done = 0;
    let stopping = false;
    let inFlight = window * unit.length;
    const t0 = performance.now();
    let elapsed = 0;
    link.onBytes = (n) => {
      inFlight -= n;
      if (stopping) {
        // drain what is still in flight so the next repetition starts clean
        if (inFlight <= 0) resolve((done / elapsed) * 1000);
        return;
      }
      pendingBytes += n;
      const writes = Math.floor(pendingBytes / unit.length);
      if (writes === 0) return;
      pendingBytes -= writes * unit.length;
      done += writes * batch;
      elapsed = performance.now() - t0;
      if (elapsed >= ms) {
        stopping = true;
        if (inFlight <= 0) resolve((done / elapsed) * 1000);
        return;
      }
      for (let i = 0; i < writes; i++) socket.write(unit);
      inFlight += writes * unit.length;
    };
    for (let i = 0; i < window; i++) socket.write(unit);
  });
}

async function measureRoundTrips(dir) {
  const path = join(dir, "echo.sock");
  const child = await startChild(["--serve-echo", path]);
  // onread: reads land in one reused buffer, the cheapest receive path Node has.
  const link = { onBytes: (_n) => {} };
  const socket = connect({ path, onread: { buffer: Buffer.allocUnsafe(1 << 16), callback: (n) => link.onBytes(n) } });
  link.socket = socket;
  await once(socket, "connect");
  try {
    const run = async (opts) => {
      await roundTrips(link, { ...opts, ms: 100 }); // warm-up: JIT and socket buffers
      const samples = [];
      for (let r = 0; r < REPS; r++) samples.push(await roundTrips(link, { ...opts, ms: RUN_MS }));
      return median(samples);
    };
    return [
      metric("limit_unix_rtt_one_at_a_time", await run({ window: 1 }), "msg/s"),
      metric("limit_unix_rtt_pipelined", await run({ window: 64 }), "msg/s"),
      metric("limit_unix_rtt_batched", await run({ window: 8, batch: 128 }), "msg/s"),
    ];
  } finally {
    socket.destroy();
    child.kill();
  }
}

async function measureStream(dir) {
  const path = join(dir, "stream.sock");
  const server = createServer();
  await new Promise((r) => server.listen(path, r));
  const accepted = once(server, "connection");
  const child = spawn(process.execPath, [SELF, "--sink", path, String(STREAM_BYTES)], { stdio: "inherit" });
  const [socket] = await accepted;
  const payload = Buffer.alloc(STREAM_BYTES, 3);
  try {
    const once100 = async () => {
      const t0 = performance.now();
      const acked = once(socket, "data");
      socket.write(payload);
      await acked;
      return STREAM_BYTES / 1e9 / ((performance.now() - t0) / 1000);
    };
    await once100(); // warm-up
    const samples = [];
    for (let r = 0; r < STREAM_REPS; r++) samples.push(await once100());
    return [metric("limit_unix_stream_100mb", median(samples), "GB/s")];
  } finally {
    socket.destroy();
    child.kill();
    server.close();
  }
}

function measureMemcpy() {
  const src = Buffer.alloc(COPY_BYTES, 5);
  const warm = Buffer.alloc(COPY_BYTES, 0); // alloc() writes zeros: every page already touched
  src.copy(warm);
  const warmSamples = [];
  for (let r = 0; r < REPS * 2; r++) {
    const t0 = performance.now();
    src.copy(warm);
    warmSamples.push(COPY_BYTES / 1e9 / ((performance.now() - t0) / 1000));
  }
  // Fresh pages: what a store pays when it copies into memory it has never written (page faults).
  const freshSamples = [];
  for (let r = 0; r < REPS; r++) {
    globalThis.gc?.();
    const fresh = Buffer.allocUnsafeSlow(COPY_BYTES);
    const t0 = performance.now();
    src.copy(fresh);
    freshSamples.push(COPY_BYTES / 1e9 / ((performance.now() - t0) / 1000));
  }
  return [metric("limit_memcpy_warm", median(warmSamples), "GB/s"), metric("limit_memcpy_fresh", median(freshSamples), "GB/s")];
}

function metric(name, value, unit) {
  return { metric: name, value: round(value, 4), unit };
}

/** Every limit, as metric records. */
export async function measureLimits() {
  const dir = mkdtempSync(join(tmpdir(), "tray-limits-"));
  try {
    return [...(await measureRoundTrips(dir)), ...measureMemcpy(), ...(await measureStream(dir))];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === SELF) {
  const [mode, a, b] = process.argv.slice(2);
  if (mode === "--serve-echo") await serveEcho(a);
  else if (mode === "--sink") sink(a, Number(b));
  else {
    for (const m of await measureLimits()) console.log(JSON.stringify(m));
  }
}
