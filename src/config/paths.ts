// Local paths in the YAML: "~" is the user's home, and a relative path is taken from the
// folder of the YAML file (not the current directory), so a config means the same thing
// wherever `tray` is run from.
import { statSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";

export function expandPath(raw: string, baseDir: string): string {
  if (raw === "~") return homedir();
  if (raw.startsWith("~/")) return join(homedir(), raw.slice(2));
  return isAbsolute(raw) ? raw : resolve(baseDir, raw);
}

/** undefined when the path is an existing file (or folder if allowed), else what is wrong. */
export function pathProblem(path: string, want: "file" | "file or folder"): string | undefined {
  try {
    const st = statSync(path);
    if (want === "file" && !st.isFile()) return `${path} is not a file`;
    return undefined;
  } catch {
    return `no such ${want}: ${path}`;
  }
}
