// Progress of `tray up` / `tray down`: one live line per host (connecting, uploading, setup,
// starting, joined, or the failure) drawn with ink when stdout is a terminal; plain
// timestamped lines otherwise, or JSON lines with { json: true } for scripts.
import type { ReactElement } from "react";

export interface Progress {
  /** The host `node` is now at `step` (e.g. "connecting", "setup 2/5", "joined"). */
  update(node: string, step: string, detail?: string): void;
  /** The host `node` failed: `message` is the one-sentence reason. */
  fail(node: string, message: string): void;
  /** A free line above the live rows (command output, notes). */
  log(line: string): void;
  /** Stop drawing (leaves the final state on screen). */
  done(): void;
}

export interface ProgressOptions {
  json?: boolean;
  /** Where to write (default process.stdout); a non-TTY stream gives plain lines. */
  stream?: NodeJS.WriteStream;
  /** Force ink on/off (default: stream.isTTY === true and not json). */
  live?: boolean;
}

interface Row {
  node: string;
  step: string;
  detail?: string;
  failed?: boolean;
  since: number;
  finished?: boolean;
}

const FINAL_STEPS = new Set(["joined", "up", "unchanged", "stopped", "removed", "done"]);

/** A progress sink that discards everything (library callers, tests). */
export function silentProgress(): Progress {
  return { update() {}, fail() {}, log() {}, done() {} };
}

export function createProgress(opts: ProgressOptions = {}): Progress {
  const stream = opts.stream ?? process.stdout;
  if (opts.json) return jsonProgress(stream);
  const live = opts.live ?? (stream.isTTY === true && process.env.TERM !== "dumb" && !process.env.CI);
  return live ? inkProgress(stream) : plainProgress(stream);
}

function stamp(): string {
  return new Date().toISOString().slice(11, 19);
}

function plainProgress(stream: NodeJS.WritableStream): Progress {
  const last = new Map<string, string>();
  const write = (s: string) => stream.write(s + "\n");
  return {
    update(node, step, detail) {
      const line = `${step}${detail ? ` ${detail}` : ""}`;
      if (last.get(node) === line) return;
      last.set(node, line);
      write(`${stamp()} ${node}: ${line}`);
    },
    fail(node, message) {
      write(`${stamp()} ${node}: FAILED ${message}`);
    },
    log(line) {
      write(line);
    },
    done() {},
  };
}

function jsonProgress(stream: NodeJS.WritableStream): Progress {
  const write = (o: Record<string, unknown>) => stream.write(JSON.stringify({ ts: new Date().toISOString(), ...o }) + "\n");
  return {
    update(node, step, detail) { write({ node, step, ...(detail ? { detail } : {}) }); },
    fail(node, message) { write({ node, step: "failed", error: message }); },
    log(line) { write({ log: line }); },
    done() {},
  };
}

const SPIN = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

function inkProgress(stream: NodeJS.WriteStream): Progress {
  const rows = new Map<string, Row>();
  const logs: Array<{ id: number; text: string }> = [];
  let nextLog = 0;
  let frame = 0;
  let instance: { rerender(el: ReactElement): void; unmount(): void; waitUntilExit(): Promise<unknown> } | undefined;
  let ink: typeof import("ink") | undefined;
  let h: typeof import("react").createElement;
  let pending = false;
  let stopped = false;

  const view = (): ReactElement => {
    const { Box, Text, Static } = ink!;
    const width = Math.max(...[...rows.keys()].map((k) => k.length), 4);
    return h(
      Box,
      { flexDirection: "column" },
      h(Static as any, { items: logs.slice(), children: (l: { id: number; text: string }) => h(Text, { key: l.id }, l.text) }),
      ...[...rows.values()].map((r) => {
        const secs = ((Date.now() - r.since) / 1000).toFixed(0);
        const icon = r.failed ? "✗" : r.finished ? "✓" : SPIN[frame % SPIN.length]!;
        const color = r.failed ? "red" : r.finished ? "green" : "cyan";
        return h(
          Box,
          { key: r.node },
          h(Text, { color }, `${icon} `),
          h(Text, { bold: true }, r.node.padEnd(width + 1)),
          // a failure is shown whole (it is the sentence to act on); progress stays on one line
          h(Text, { color: r.failed ? "red" : undefined, wrap: r.failed ? "wrap" : "truncate-end" }, `${r.step}${r.detail ? ` ${r.detail}` : ""}`),
          r.finished || r.failed ? null : h(Text, { dimColor: true }, `  ${secs}s`),
        );
      }),
    );
  };

  const draw = () => {
    if (!ink || stopped) return;
    // a pseudo-terminal without a size (script, some CI runners) reports 0 columns: ink would
    // then wrap after every character
    if (!stream.columns) (stream as { columns: number }).columns = 100;
    if (!stream.rows) (stream as { rows: number }).rows = 50;
    if (!instance) instance = ink.render(view(), { stdout: stream, patchConsole: false, exitOnCtrlC: false });
    else instance.rerender(view());
  };
  const schedule = () => {
    if (pending) return;
    pending = true;
    setImmediate(() => { pending = false; draw(); });
  };
  const timer = setInterval(() => { frame++; schedule(); }, 120);
  timer.unref();

  // ink and react load only when drawing (ink takes ~0.3-1 s to load; meanwhile SSH work runs)
  Promise.all([import("ink"), import("react")]).then(([m, r]) => {
    h = r.createElement;
    ink = m;
    draw();
  }, () => { /* no ink: keep silent rows; done() prints a summary */ });

  return {
    update(node, step, detail) {
      const prev = rows.get(node);
      const row: Row = { node, step, since: prev && prev.step === step ? prev.since : Date.now(), finished: FINAL_STEPS.has(step), ...(detail ? { detail } : {}) };
      rows.set(node, row);
      schedule();
    },
    fail(node, message) {
      rows.set(node, { node, step: message, failed: true, since: Date.now() });
      schedule();
    },
    log(line) {
      logs.push({ id: nextLog++, text: line });
      schedule();
    },
    done() {
      if (stopped) return;
      clearInterval(timer);
      if (ink) draw();
      else {
        // finished before ink loaded: print the final state as plain lines
        for (const l of logs) stream.write(l.text + "\n");
        for (const r of rows.values()) stream.write(`${r.failed ? "✗" : "✓"} ${r.node}: ${r.step}${r.detail ? ` ${r.detail}` : ""}\n`);
      }
      stopped = true;
      instance?.unmount();
    },
  };
}
