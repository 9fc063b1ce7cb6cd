import { describe, expect, it } from "vitest";
import { PanelStore } from "../src/store";
import type { SyncMessage } from "../src/types";

function encode(series: [number, string, number[], number[]][]): ArrayBuffer {
  const parts: number[] = [1, series.length & 255, series.length >> 8];
  const bytes: Uint8Array[] = [];
  for (const [node, name, t, v] of series) {
    const head = new DataView(new ArrayBuffer(3));
    head.setUint16(0, node, true);
    head.setUint8(2, name.length);
    const n = new DataView(new ArrayBuffer(4));
    n.setUint32(0, t.length, true);
    bytes.push(new Uint8Array(head.buffer), new TextEncoder().encode(name), new Uint8Array(n.buffer));
    bytes.push(new Uint8Array(new Float64Array(t).buffer), new Uint8Array(new Float64Array(v).buffer));
  }
  const all = [new Uint8Array(parts), ...bytes];
  const out = new Uint8Array(all.reduce((a, b) => a + b.length, 0));
  let o = 0;
  for (const b of all) {
    out.set(b, o);
    o += b.length;
  }
  return out.buffer;
}

const delta = (seq: number, rows: [number, string, string][], first = 0): SyncMessage => ({
  kind: "delta",
  seq,
  logs: { "0": { first, rows } },
  metrics: false,
});

describe("PanelStore", () => {
  it("applies deltas, replacing rows by number", () => {
    const s = new PanelStore();
    s.apply(delta(1, [[0, "stdout", "a"], [1, "stderr", "10%"]]), undefined);
    s.apply(delta(2, [[1, "stderr", "100%"], [2, "stdout", "b"]]), undefined);
    expect([...s.logs.get(0)!.rows.values()].map((r) => r[1])).toEqual(["a", "100%", "b"]);
  });

  it("drops rows older than `first`", () => {
    const s = new PanelStore();
    s.apply(delta(1, [[0, "stdout", "a"], [1, "stdout", "b"], [2, "stdout", "c"]]), undefined);
    s.apply(delta(2, [[3, "stdout", "d"]], 2), undefined);
    expect([...s.logs.get(0)!.rows.keys()]).toEqual([2, 3]);
  });

  it("a snapshot replaces everything; older deltas are ignored; a gap asks again", () => {
    const s = new PanelStore();
    s.apply(delta(1, [[0, "stdout", "stale"]]), undefined);
    const snap: SyncMessage = { kind: "snapshot", seq: 5, logs: { "0": { first: 3, rows: [[3, "stdout", "x"]] } }, metrics: true };
    s.apply(snap, [encode([[0, "cpu_percent", [1, 2], [10, 20]]])]);
    expect([...s.logs.get(0)!.rows.values()].map((r) => r[1])).toEqual(["x"]);
    expect(s.metrics.get(0)!.get("cpu_percent")!.length).toBe(2);
    expect(s.apply(delta(4, [[3, "stdout", "old"]]), undefined)).toBe(true);
    expect(s.logs.get(0)!.rows.get(3)![1]).toBe("x");
    expect(s.apply(delta(6, [[4, "stdout", "y"]]), undefined)).toBe(true);
    expect(s.apply(delta(8, [[5, "stdout", "z"]]), undefined)).toBe(false);
  });

  it("appends metric points from delta buffers", () => {
    const s = new PanelStore();
    s.apply({ kind: "delta", seq: 1, logs: {}, metrics: true }, [encode([[2, "loss", [1], [0.5]]])]);
    s.apply({ kind: "delta", seq: 2, logs: {}, metrics: true }, [encode([[2, "loss", [2, 3], [0.25, 0.125]]])]);
    const loss = s.metrics.get(2)!.get("loss")!;
    expect([...loss.v.subarray(0, loss.length)]).toEqual([0.5, 0.25, 0.125]);
  });
});

describe("NodeLog", () => {
  it("keeps its row numbers in order, late rows included, for the pane to index", () => {
    const s = new PanelStore();
    s.apply(delta(1, [[0, "stdout", "a"], [10, "stdout", "k"]]), undefined);
    const log = s.logs.get(0)!;
    const before = log.ordered();
    expect(before).toEqual([0, 10]);
    expect(log.ordered()).toBe(before); // unchanged log, the same array
    s.apply(delta(2, [[5, "stdout", "f"], [11, "stdout", "l"]]), undefined);
    expect(log.ordered()).toEqual([0, 5, 10, 11]);
    expect(log.newest).toBe(11);
    s.apply(delta(3, [[12, "stdout", "m"]], 11), undefined);
    expect(log.ordered()).toEqual([11, 12]);
  });
});

describe("PanelStore panes", () => {
  it("tells the kernel the open panes of all its views, once per change", () => {
    const store = new PanelStore();
    const told: number[][] = [];
    store.onPanes = (nodes) => told.push(nodes);
    const inline = {};
    const sidebar = {};
    store.setPanes(inline, new Set([3]));
    store.setPanes(sidebar, new Set([3, 1]));
    store.setPanes(inline, new Set([3])); // no change
    store.setPanes(sidebar, null); // the sidebar closed: node 3 stays open inline
    store.setPanes(inline, new Set());
    expect(told).toEqual([[3], [1, 3], [3], []]);
  });

  it("a pane's whole rows replace the rows it had", () => {
    const store = new PanelStore();
    store.apply({ kind: "snapshot", seq: 1, logs: {}, metrics: false }, undefined);
    store.apply(delta(2, [[0, "stdout", "stale"], [1, "stdout", "stale too"]]), undefined);
    const whole: SyncMessage = {
      kind: "delta",
      seq: 3,
      logs: { "0": { first: 5, rows: [[5, "stdout", "five"], [6, "stdout", "six"]], whole: true } },
      metrics: false,
    };
    expect(store.apply(whole, undefined)).toBe(true);
    expect([...store.log(0).rows.keys()]).toEqual([5, 6]);
  });
});
