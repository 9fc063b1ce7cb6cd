import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { decodeMetrics, SeriesRing } from "../src/metrics";

// Written by skyward.jupyter.panel.sync.encode_metrics (tests/panel checks the same bytes).
const fixturePath = (name: string) => join(dirname(fileURLToPath(import.meta.url)), "fixtures", name);
const fixture = readFileSync(fixturePath("metrics-v1.bin"));

describe("decodeMetrics", () => {
  it("decodes the kernel's binary series", () => {
    const series = decodeMetrics(new DataView(fixture.buffer, fixture.byteOffset, fixture.byteLength));
    expect(series.map((s) => [s.node, s.name])).toEqual([
      [0, "cpu_percent"],
      [15, "loss"],
      [3, "μ-metric"],
    ]);
    expect([...series[0].t]).toEqual([100, 102, 104.5]);
    expect([...series[0].v]).toEqual([12.5, 50, 99.75]);
    expect([...series[1].v]).toEqual([0.125]);
    expect([...series[2].v]).toEqual([-1e-9, 3e300]);
  });

  it("accepts an ArrayBuffer or a byte view at an offset", () => {
    const padded = new Uint8Array(fixture.byteLength + 5);
    padded.set(fixture, 5);
    const a = decodeMetrics(padded.subarray(5));
    const b = decodeMetrics(padded.buffer.slice(5));
    expect(a).toEqual(b);
    expect(a).toHaveLength(3);
  });

  it("rejects other versions and truncated buffers", () => {
    const bad = new Uint8Array(fixture);
    bad[0] = 9;
    expect(() => decodeMetrics(bad)).toThrow(/version 9/);
    expect(() => decodeMetrics(fixture.subarray(0, 20))).toThrow(/truncated|bounds/i);
  });
});

describe("SeriesRing", () => {
  it("keeps the newest points", () => {
    const s = new SeriesRing(4);
    s.push(new Float64Array([1, 2, 3]), new Float64Array([10, 20, 30]));
    s.push(new Float64Array([4, 5]), new Float64Array([40, 50]));
    expect(s.length).toBe(4);
    expect([...s.t.subarray(0, s.length)]).toEqual([2, 3, 4, 5]);
    expect(s.last()).toBe(50);
    s.push(new Float64Array([6, 7, 8, 9, 10]), new Float64Array([6, 7, 8, 9, 10]));
    expect([...s.v.subarray(0, s.length)]).toEqual([7, 8, 9, 10]);
  });
});
