// Encoding of user values (see src/protocol/values.ts for the tags).
import { Packr, addExtension } from "msgpackr";
import { ENC_ERROR, ENC_MSGPACK, ENC_RAW, type Tagged } from "../protocol/values.js";
import { ActorHandle, ObjectRef } from "./refs.js";
import { fromWireError, type WireError } from "./errors.js";

// Refs found while packing one value; reset per encode.
let nestedRefs: string[] | undefined;
let nestedActors: string[] | undefined;

addExtension({
  Class: ObjectRef,
  type: 0x70,
  write(ref: ObjectRef<unknown>) {
    (nestedRefs ??= []).push(ref.id);
    return ref.id;
  },
  read(id: string) {
    return ObjectRef.fromId(id);
  },
});

addExtension({
  Class: ActorHandle,
  type: 0x71,
  write(h: ActorHandle<any>) {
    (nestedActors ??= []).push(h._actorId);
    return h._toWire();
  },
  read(w: any) {
    return ActorHandle._fromWire(w);
  },
});

const packr = new Packr({ structuredClone: true, moreTypes: true, useBigIntExtension: true });

const MINUS_ZERO = new Uint8Array([0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0]);

const rawTypes: Record<string, any> = {
  Buffer, Uint8Array, Int8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array,
};

export function encodeValue(value: unknown): Tagged {
  if (value instanceof Uint8Array || (ArrayBuffer.isView(value) && !(value instanceof DataView))) {
    const v = value as ArrayBufferView;
    const k = Buffer.isBuffer(v) ? "Buffer" : v.constructor.name;
    if (k in rawTypes) return { e: ENC_RAW, k, d: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) };
  }
  if (value instanceof ArrayBuffer) return { e: ENC_RAW, k: "ArrayBuffer", d: new Uint8Array(value) };
  // msgpackr writes -0 as the integer 0; a float64 keeps its sign (top level only).
  if (value === 0 && 1 / value < 0) return { e: ENC_MSGPACK, d: MINUS_ZERO };
  nestedRefs = undefined;
  nestedActors = undefined;
  const d = packr.pack(value);
  const t: Tagged = { e: ENC_MSGPACK, d };
  if (nestedRefs) t.r = nestedRefs;
  if (nestedActors) t.a = nestedActors;
  nestedRefs = nestedActors = undefined;
  return t;
}

export function encodeError(w: WireError): Tagged {
  return { e: ENC_ERROR, d: packr.pack(w) };
}

/**
 * Decode bytes. `owned` says the bytes belong to us alone (read from a file, copied from a
 * frame), so typed arrays may be views onto them without another copy.
 */
export function decodeValue(e: number, d: Uint8Array, k?: string): unknown {
  if (e === ENC_MSGPACK) return packr.unpack(d);
  if (e === ENC_RAW) {
    if (k === "ArrayBuffer") return d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength);
    if (k === "Buffer") return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    const C = rawTypes[k ?? "Uint8Array"] ?? Uint8Array;
    const bpe = C.BYTES_PER_ELEMENT ?? 1;
    // Typed arrays need aligned offsets; copy only when the bytes are misaligned.
    if (d.byteOffset % bpe === 0) return new C(d.buffer, d.byteOffset, d.byteLength / bpe);
    const copy = new Uint8Array(d.byteLength);
    copy.set(d);
    return new C(copy.buffer, 0, d.byteLength / bpe);
  }
  if (e === ENC_ERROR) throw fromWireError(packr.unpack(d) as WireError);
  throw new Error(`unknown value encoding ${e}: this process is older than the one that wrote the value`);
}

export function tryDecodeError(t: Tagged): Error | undefined {
  if (t.e !== ENC_ERROR || !t.d) return undefined;
  return fromWireError(packr.unpack(t.d) as WireError);
}
