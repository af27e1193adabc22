// Collects every problem found in a config so the user sees all of them at once, each as
// "file:line: path.to.key: message".
import { UserError } from "../errors.js";
import type { KeyPath } from "./yaml-source.js";

export interface ConfigProblem {
  line: number;
  path: KeyPath;
  message: string;
}

export class Problems {
  readonly errors: ConfigProblem[] = [];
  readonly notes: ConfigProblem[] = [];
  constructor(
    readonly file: string,
    private readonly lineOf: (path: KeyPath) => number,
  ) {}

  error(path: KeyPath, message: string): void {
    this.errors.push({ line: this.lineOf(path), path, message });
  }

  note(path: KeyPath, message: string): void {
    this.notes.push({ line: this.lineOf(path), path, message });
  }

  format(p: ConfigProblem): string {
    const where = p.path.length > 0 ? `${formatPath(p.path)}: ` : "";
    return `${this.file}:${p.line}: ${where}${p.message}`;
  }

  throwIfAny(): void {
    if (this.errors.length === 0) return;
    const sorted = [...this.errors].sort((a, b) => a.line - b.line); // stable: same line keeps walk order
    throw new ConfigError(this.file, sorted.map((p) => this.format(p)), sorted);
  }
}

/** A UserError whose message lists every problem, one per line. */
export class ConfigError extends UserError {
  constructor(
    file: string,
    readonly lines: string[],
    readonly problems: ConfigProblem[],
  ) {
    super(lines.length === 1 ? lines[0]! : `${file} has ${lines.length} problems:\n${lines.join("\n")}`);
  }
}

/** provider.worker_ips[1], file_mounts["/remote/dir"] */
export function formatPath(path: KeyPath): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(part)) out += out ? `.${part}` : part;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out;
}
