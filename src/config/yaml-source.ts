// Parses YAML text into a plain value plus an index from key path to source line, so that
// validation can work on plain objects and still say on which line a problem is.
import { LineCounter, isAlias, isMap, isPair, isScalar, isSeq, parseDocument } from "yaml";
import type { Document, Node } from "yaml";

export type KeyPath = readonly (string | number)[];

export interface ParsedYaml {
  value: unknown;
  /** Line (1-based) of the key at `path`, or of its nearest ancestor the text has. */
  lineOf(path: KeyPath): number;
  /** Syntax errors; when there are any, `value` must not be trusted. */
  syntaxErrors: { line: number; message: string }[];
}

export function parseYaml(text: string): ParsedYaml {
  const lineCounter = new LineCounter();
  // prettyErrors off: we print our own "file:line:" prefix, not yaml's code snippet.
  const doc = parseDocument(text, { lineCounter, merge: true, prettyErrors: false });
  const lineAt = (offset: number) => lineCounter.linePos(offset).line;

  const syntaxErrors = doc.errors.map((e) => ({ line: lineAt(e.pos[0]), message: cleanYamlMessage(e.message) }));
  const lines = new Map<string, number>();
  if (syntaxErrors.length === 0 && doc.contents) indexLines(doc, doc.contents, [], lines, lineAt, 0);

  const lineOf = (path: KeyPath): number => {
    for (let n = path.length; n > 0; n--) {
      const line = lines.get(pathKey(path.slice(0, n)));
      if (line !== undefined) return line;
    }
    return doc.contents?.range ? lineAt(doc.contents.range[0]) : 1;
  };
  const value = syntaxErrors.length === 0 ? doc.toJS({ maxAliasCount: 1000 }) : undefined;
  return { value, lineOf, syntaxErrors };
}

function pathKey(path: KeyPath): string {
  return JSON.stringify(path);
}

// Records the line of every map key and list item. Keys brought in by a `<<` merge take the
// line of their anchor's definition unless the map also sets them itself.
function indexLines(
  doc: Document,
  node: unknown,
  path: KeyPath,
  lines: Map<string, number>,
  lineAt: (offset: number) => number,
  depth: number,
  merged = false,
): void {
  if (depth > 50) return; // aliases can nest deeply; the config never legitimately does
  if (isAlias(node)) {
    indexLines(doc, node.resolve(doc), path, lines, lineAt, depth + 1, merged);
    return;
  }
  if (isMap(node)) {
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      if (key === "<<") {
        indexLines(doc, pair.value, path, lines, lineAt, depth + 1, true);
        continue;
      }
      const childPath = [...path, key];
      const keyNode = pair.key as Node | null;
      const offset = keyNode?.range?.[0] ?? (pair.value as Node | null)?.range?.[0];
      if (offset !== undefined && (!merged || !lines.has(pathKey(childPath)))) {
        lines.set(pathKey(childPath), lineAt(offset));
      }
      indexLines(doc, pair.value, childPath, lines, lineAt, depth + 1, merged);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => {
      const offset = (item as Node | null)?.range?.[0];
      if (offset !== undefined) lines.set(pathKey([...path, i]), lineAt(offset));
      indexLines(doc, item, [...path, i], lines, lineAt, depth + 1, merged);
    });
  }
}

// yaml's messages sometimes end with " at line N, column M" — we already print the line.
function cleanYamlMessage(message: string): string {
  return message.replace(/ at line \d+, column \d+:?[\s\S]*$/, "").trim();
}
