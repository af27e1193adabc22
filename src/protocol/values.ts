// How a user value travels. Every value on the wire carries its encoding tag, so a new
// encoding never breaks an old reader:
//   MSGPACK  structured-clone msgpack (Map, Set, Date, BigInt, typed arrays, nested refs)
//   RAW      a top-level Buffer / typed array / ArrayBuffer: its bytes as they are, never
//            re-encoded element by element (a 100 MB Float64Array costs one memcpy)
//   ERROR    a task's failure (WireError), what `get` rejects with
export const ENC_MSGPACK = 0;
export const ENC_RAW = 1;
export const ENC_ERROR = 2;

/** Objects at least this big go to the node's shared-memory store instead of inline. */
export const INLINE_MAX_BYTES = 100 * 1024;

/** An encoded value. */
export interface Tagged {
  /** encoding tag */
  e: number;
  /** bytes (inline) — absent when the value lives in the store */
  d?: Uint8Array;
  /** RAW only: constructor name of the typed array ("Buffer", "Float64Array", "ArrayBuffer"...) */
  k?: string;
  /** ids of ObjectRefs nested inside the value (for reference counting) */
  r?: string[];
  /** ids of actors whose handles are nested inside */
  a?: string[];
}

/** Where a stored (large) object lives on a node, and how to decode it. */
export interface StoredLoc {
  e: number;
  k?: string;
  r?: string[];
  size: number;
  /** absolute path of the file (shared memory, or the spill directory) */
  path: string;
  /** node holding this copy */
  node: string;
  /** the parked store file the writer reused (the store stops counting it as parked) */
  rc?: string;
  /**
   * 1: a copy still arriving from another node; the file grows to `size` bytes (read it as it
   * comes, see readGrowing in src/runtime/recycle.ts). Only ever sent to local processes.
   */
  g?: 1;
}
