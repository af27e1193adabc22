// Cluster YAML: Ray's keys, checked up front. Every mistake in a file is reported at once as
// "file:line: path.to.key: message" in one UserError, before anything is created.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { UserError } from "../errors.js";
import { Problems } from "./problems.js";
import type { ClusterConfig } from "./types.js";
import { validateConfig } from "./validate.js";
import { parseYaml } from "./yaml-source.js";

export type * from "./types.js";
export { PROVIDER_TYPES } from "./types.js";
export { ConfigError, type ConfigProblem } from "./problems.js";

export function loadClusterConfig(file: string): ClusterConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(code === "ENOENT" ? `${file}: no such cluster config file` : `${file}: cannot read the cluster config (${code ?? String(e)})`, { cause: e });
  }
  return parseClusterConfig(text, file);
}

/** `file` names the text in messages; relative paths inside the YAML are taken from its folder. */
export function parseClusterConfig(text: string, file: string): ClusterConfig {
  const parsed = parseYaml(text);
  const p = new Problems(file, parsed.lineOf);
  if (parsed.syntaxErrors.length > 0) {
    for (const e of parsed.syntaxErrors) p.errors.push({ line: e.line, path: [], message: `invalid YAML: ${e.message}` });
    p.throwIfAny();
  }
  const config = validateConfig(p, parsed.value, dirname(resolve(file)));
  p.throwIfAny();
  if (!config) throw new Error(`bug: ${file} failed validation without a reported problem`);
  config.notes = p.notes.map((n) => p.format(n));
  return config;
}

/** Azure VM parameters, wherever the file put them (Ray nests them under azure_arm_parameters). */
export function azureVmParameters(nodeConfig: Record<string, unknown>): Record<string, unknown> {
  const nested = nodeConfig.azure_arm_parameters;
  const base = typeof nested === "object" && nested !== null && !Array.isArray(nested) ? (nested as Record<string, unknown>) : {};
  const { azure_arm_parameters: _ignored, ...flat } = nodeConfig;
  return { ...base, ...flat };
}
