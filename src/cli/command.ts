// The one wrapper every command goes through: errors in two tiers. A UserError (the user's
// mistake) prints its sentence and exits 1; anything else is a bug in tray: print the stack.
import { isUserError } from "../errors.js";

export function run<A extends unknown[]>(fn: (...args: A) => Promise<number | void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      const code = await fn(...args);
      process.exitCode = code ?? 0;
    } catch (e) {
      if (isUserError(e)) {
        process.stderr.write(`tray: ${e.message}\n`);
        if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
        process.exitCode = 1;
        return;
      }
      process.stderr.write(`tray: internal error (please report it):\n${e instanceof Error ? e.stack : String(e)}\n`);
      process.exitCode = 70;
    }
  };
}

/** Parse repeated `--env K=V` options. */
export function collectKeyValue(v: string, prev: Record<string, string> = {}): Record<string, string> {
  const i = v.indexOf("=");
  if (i <= 0) throw new Error(`--env takes KEY=VALUE, got "${v}"`);
  return { ...prev, [v.slice(0, i)]: v.slice(i + 1) };
}
