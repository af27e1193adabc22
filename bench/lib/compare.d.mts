// Types for compare.mjs.
import type { Metric } from "./metric.mjs";

export type Sources = Record<string, Metric[] | undefined>;
export interface Target {
  metric: string;
  issue: number;
  ref?: string;
  factor?: number;
  atLeast?: number;
  atMost?: number;
}
export interface Reference {
  value: number;
  unit: string;
  ratio: number | undefined;
}
export interface Row extends Metric {
  refs: Record<string, Reference>;
}
export interface TargetResult extends Target {
  need: string;
  status: "pass" | "fail" | "missing" | "no-reference";
  value?: number;
  refValue?: number;
  ratio?: number;
}
export interface Context {
  date: string;
  cpus: number;
  cpuModel: string;
  node: string;
  loadavg: string;
}

export const RAY_PUBLISHED: Record<string, { value: number; unit: string }>;
export const REFERENCES: Record<string, string[]>;
export const TARGETS: Target[];
export function lowerIsBetter(unit: string): boolean;
export function ratio(trayValue: number, refValue: number, unit: string): number | undefined;
export function lookup(sources: Sources, ref: string): Metric | undefined;
export function compareRows(tray: Metric[], sources: Sources): Row[];
export function evaluateTargets(tray: Metric[], sources: Sources, targets?: Target[]): TargetResult[];
export function formatNumber(x: number | undefined | null): string;
export function renderTables(input: { rows: Row[]; targets: TargetResult[]; sources: Sources; context?: Context; versions?: Record<string, string> }): string;
export const DOC_START: string;
export const DOC_END: string;
export function replaceBetweenMarkers(doc: string, table: string): string;
