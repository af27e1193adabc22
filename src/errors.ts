// Two tiers of errors. A UserError is the user's mistake (bad YAML, unreachable host, wrong
// token...): the CLI prints its one-sentence message and exits 1, no stack. Anything else is
// a bug in tray: the CLI prints the stack so it can be reported.
export class UserError extends Error {
  override name = "UserError";
  /** Optional hint printed on a second line ("try: ..."). */
  hint?: string;
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    if (options?.hint) this.hint = options.hint;
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof Error && (e as Error).name === "UserError";
}
