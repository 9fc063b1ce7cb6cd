// Decoding the metric buffers the kernel sends (skyward/jupyter/panel/sync.py,
// `encode_metrics`): version 1, little-endian:
//   u8 version | u16 count | per series: u16 node | u8 name length | name (UTF-8)
//   | u32 n | n x f64 time | n x f64 value

export interface DecodedSeries {
  node: number;
  name: string;
  t: Float64Array;
  v: Float64Array;
}

export const METRICS_VERSION = 1;

const utf8 = new TextDecoder();

function asView(buffer: ArrayBuffer | ArrayBufferView): DataView {
  if (buffer instanceof DataView) return buffer;
  if (ArrayBuffer.isView(buffer)) return new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return new DataView(buffer);
}

export function decodeMetrics(buffer: ArrayBuffer | ArrayBufferView): DecodedSeries[] {
  const view = asView(buffer);
  if (view.byteLength < 3) throw new Error("[skyward] metrics buffer too short");
  const version = view.getUint8(0);
  if (version !== METRICS_VERSION) {
    throw new Error(`[skyward] metrics buffer version ${version}, expected ${METRICS_VERSION}`);
  }
  const count = view.getUint16(1, true);
  let offset = 3;
  const out: DecodedSeries[] = [];
  for (let s = 0; s < count; s++) {
    const node = view.getUint16(offset, true);
    const length = view.getUint8(offset + 2);
    offset += 3;
    const name = utf8.decode(new Uint8Array(view.buffer, view.byteOffset + offset, length));
    offset += length;
    const n = view.getUint32(offset, true);
    offset += 4;
    if (offset + 16 * n > view.byteLength) throw new Error("[skyward] metrics buffer truncated");
    const t = new Float64Array(n);
    const v = new Float64Array(n);
    for (let i = 0; i < n; i++) t[i] = view.getFloat64(offset + 8 * i, true);
    offset += 8 * n;
    for (let i = 0; i < n; i++) v[i] = view.getFloat64(offset + 8 * i, true);
    offset += 8 * n;
    out.push({ node, name, t, v });
  }
  return out;
}

/** A bounded series of points, appended to in place. */
export class SeriesRing {
  t: Float64Array;
  v: Float64Array;
  length = 0;
  version = 0;

  constructor(readonly limit = 1000) {
    this.t = new Float64Array(limit);
    this.v = new Float64Array(limit);
  }

  /** Append points (keeping the newest `limit`). */
  push(t: Float64Array, v: Float64Array): void {
    const n = t.length;
    if (n >= this.limit) {
      this.t.set(t.subarray(n - this.limit));
      this.v.set(v.subarray(n - this.limit));
      this.length = this.limit;
    } else {
      const keep = Math.min(this.length, this.limit - n);
      if (keep < this.length) {
        this.t.copyWithin(0, this.length - keep, this.length);
        this.v.copyWithin(0, this.length - keep, this.length);
      }
      this.t.set(t, keep);
      this.v.set(v, keep);
      this.length = keep + n;
    }
    this.version++;
  }

  clear(): void {
    this.length = 0;
    this.version++;
  }

  last(): number | undefined {
    return this.length ? this.v[this.length - 1] : undefined;
  }
}
