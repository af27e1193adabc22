// Typed readers over plain YAML values. Each reports a problem (and returns undefined) instead
// of throwing, so one pass finds every mistake in the file.
import { closestKey } from "./closest-key.js";
import type { Problems } from "./problems.js";
import type { KeyPath } from "./yaml-source.js";

export type YamlMap = Record<string, unknown>;

export function describe(value: unknown): string {
  if (value === null || value === undefined) return "nothing";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") return `text ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value)}`;
  return `${typeof value} ${String(value)}`;
}

export function isMapValue(value: unknown): value is YamlMap {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/** A mapping at `path`; null/absent gives undefined without a problem (YAML's empty section). */
export function readMap(p: Problems, value: unknown, path: KeyPath): YamlMap | undefined {
  if (value === null || value === undefined) return undefined;
  if (isMapValue(value)) return value;
  p.error(path, `must be a mapping of keys to values, got ${describe(value)}`);
  return undefined;
}

/**
 * Reports keys of `map` that are not in `known`, with the closest known key as a hint.
 * `elsewhere` names keys that exist but belong in another section, to say where.
 */
export function checkKnownKeys(
  p: Problems,
  map: YamlMap,
  path: KeyPath,
  known: readonly string[],
  elsewhere: Record<string, string> = {},
): void {
  for (const key of Object.keys(map)) {
    if (known.includes(key)) continue;
    const home = elsewhere[key];
    if (home) {
      p.error([...path, key], home);
      continue;
    }
    const guess = closestKey(key, known);
    p.error([...path, key], `unknown key${guess ? `; did you mean \`${guess}\`?` : `; known keys here: ${known.join(", ")}`}`);
  }
}

export function required(p: Problems, path: KeyPath, what: string): undefined {
  p.error(path, `required: ${what}`);
  return undefined;
}

export function readString(p: Problems, map: YamlMap, path: KeyPath, key: string): string | undefined {
  const value = map[key];
  if (value === null || value === undefined) return undefined;
  if (typeof value === "string" && value.trim() !== "") return value;
  p.error([...path, key], typeof value === "string" ? "must not be empty" : `must be text, got ${describe(value)}`);
  return undefined;
}

export function readBool(p: Problems, map: YamlMap, path: KeyPath, key: string): boolean | undefined {
  const value = map[key];
  if (value === null || value === undefined) return undefined;
  if (typeof value === "boolean") return value;
  p.error([...path, key], `must be true or false, got ${describe(value)}`);
  return undefined;
}

export interface NumberRule {
  min?: number;
  /** min is excluded (value must be greater) */
  above?: number;
  integer?: boolean;
  unit?: string;
}

export function readNumber(p: Problems, map: YamlMap, path: KeyPath, key: string, rule: NumberRule = {}): number | undefined {
  const value = map[key];
  if (value === null || value === undefined) return undefined;
  return checkNumber(p, value, [...path, key], rule);
}

export function checkNumber(p: Problems, value: unknown, path: KeyPath, rule: NumberRule = {}): number | undefined {
  const unit = rule.unit ? ` (${rule.unit})` : "";
  const kind = rule.integer ? "a whole number" : "a number";
  if (typeof value !== "number" || !Number.isFinite(value)) {
    p.error(path, `must be ${kind}${unit}, got ${describe(value)}`);
    return undefined;
  }
  if (rule.integer && !Number.isInteger(value)) return p.error(path, `must be ${kind}${unit}, got ${value}`), undefined;
  if (rule.min !== undefined && value < rule.min) return p.error(path, `must be at least ${rule.min}${unit}, got ${value}`), undefined;
  if (rule.above !== undefined && value <= rule.above) return p.error(path, `must be more than ${rule.above}${unit}, got ${value}`), undefined;
  return value;
}

/** A list of text items (commands, addresses); null/absent gives undefined. */
export function readStringList(p: Problems, map: YamlMap, path: KeyPath, key: string): string[] | undefined {
  const value = map[key];
  if (value === null || value === undefined) return undefined;
  if (!Array.isArray(value)) {
    p.error([...path, key], `must be a list of text items, got ${describe(value)}`);
    return undefined;
  }
  const out: string[] = [];
  value.forEach((item, i) => {
    // Ray's files often hold numbers in commands' lists only by accident; say so rather than coerce.
    if (typeof item === "string") out.push(item);
    else p.error([...path, key, i], `must be text, got ${describe(item)}`);
  });
  return out;
}

/** A mapping of text to text (tags, file_mounts). Scalars are accepted as text for tags. */
export function readStringMap(
  p: Problems,
  map: YamlMap,
  path: KeyPath,
  key: string,
  opts: { scalarsAsText?: boolean } = {},
): Record<string, string> | undefined {
  const m = readMap(p, map[key], [...path, key]);
  if (!m) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v === "string") out[k] = v;
    else if (opts.scalarsAsText && (typeof v === "number" || typeof v === "boolean")) out[k] = String(v);
    else p.error([...path, key, k], `must be text, got ${describe(v)}`);
  }
  return out;
}
