import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CHART_REDRAW_MS } from "../src/chart";
import { OVERSCAN, REDRAW_MS, VISIBLE_LINES } from "../src/logwindow";
import { PanelStore } from "../src/store";
import type { NodeSummary, PanelModel, Summary, SyncMessage } from "../src/types";
import { CHARTS_PER_FRAME, PanelView, stateLabel } from "../src/view";

function node(n: number): NodeSummary {
  return {
    node: n,
    instance_id: `i-${n}`,
    state: "busy",
    phase: "",
    address: "10.0.0.1",
    spot: false,
    accelerator: "",
    instance_type: "cpu",
    price_per_hour: 0,
    started_at: null,
    ended_at: null,
    task: "cell",
    note: "",
    metrics: ["loss"],
  };
}

const summary: Summary = {
  cluster: {
    id: "c-1",
    name: "",
    provider: "container",
    state: "ready",
    nodes: 2,
    requested_at: 0,
    ready_at: 0,
    ended_at: null,
    price_per_hour: 0,
  },
  nodes: [node(0), node(1)],
  errors: [],
  now: 0,
};

const model: PanelModel = {
  get: ((name: string) => (name === "summary" ? summary : name === "subshells" ? true : "p")) as PanelModel["get"],
  on: () => undefined,
  off: () => undefined,
  send: () => undefined,
};

let frames: FrameRequestCallback[] = [];
let clock = 0;

function frame(): void {
  clock += 16;
  const due = frames;
  frames = [];
  for (const f of due) f(clock);
}

let seq = 0;
function lines(node: number, from: number, to: number): SyncMessage {
  const rows: [number, string, string][] = [];
  for (let n = from; n < to; n++) rows.push([n, "stdout", `node ${node} line ${n}`]);
  return { kind: "delta", seq: ++seq, logs: { [String(node)]: { first: Math.max(0, to - 2000), rows } }, metrics: false };
}

/** One point of node `node`'s "loss", as the kernel's metrics buffer (sync.py). */
function point(node: number, t: number, v: number): ArrayBuffer {
  const out = new DataView(new ArrayBuffer(3 + 3 + 4 + 4 + 16));
  out.setUint8(0, 1);
  out.setUint16(1, 1, true);
  out.setUint16(3, node, true);
  out.setUint8(5, 4);
  new Uint8Array(out.buffer).set(new TextEncoder().encode("loss"), 6);
  out.setUint32(10, 1, true);
  out.setFloat64(14, t, true);
  out.setFloat64(22, v, true);
  return out.buffer;
}

beforeEach(() => {
  vi.useFakeTimers();
  frames = [];
  clock = 0;
  seq = 0;
  vi.stubGlobal("requestAnimationFrame", (f: FrameRequestCallback) => frames.push(f));
  vi.stubGlobal("cancelAnimationFrame", () => undefined);
  vi.spyOn(performance, "now").mockImplementation(() => clock);
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
  document.body.replaceChildren();
});

function mount(): { store: PanelStore; host: HTMLElement; controller: AbortController } {
  const store = new PanelStore();
  store.setSummary(summary);
  store.apply({ kind: "snapshot", seq: 0, logs: {}, metrics: false }, undefined);
  const host = document.createElement("div");
  document.body.append(host);
  const controller = new AbortController();
  new PanelView(model, store, host, controller.signal);
  frame();
  return { store, host, controller };
}

describe("PanelView under a flood", () => {
  it("many messages between two frames make one draw, of the newest rows only", () => {
    const { store, host } = mount();
    host.querySelector<HTMLElement>('tr.sw-node[data-node="0"]')!.click();
    frame();
    for (let i = 0; i < 20; i++) store.apply(lines(0, i * 100, (i + 1) * 100), undefined);
    expect(frames).toHaveLength(1);
    frame();
    const shown = [...host.querySelectorAll('pre.sw-log[data-node="0"] .sw-line')].map((e) => e.textContent);
    expect(shown).toHaveLength(VISIBLE_LINES + 1 + OVERSCAN);
    expect(shown.at(-1)).toBe("node 0 line 1999");
  });

  it("lines arriving every frame redraw the open pane at most every REDRAW_MS", () => {
    const { store, host } = mount();
    host.querySelector<HTMLElement>('tr.sw-node[data-node="0"]')!.click();
    frame();
    const last = () => host.querySelector('pre.sw-log[data-node="0"] .sw-line:last-child')?.textContent;
    let redraws = 0;
    let shown = last();
    for (let i = 0; i < 60; i++) {
      store.apply(lines(0, i * 50, (i + 1) * 50), undefined);
      vi.advanceTimersByTime(16);
      frame();
      if (last() !== shown) redraws++;
      shown = last();
    }
    // 60 frames of 16 ms, a new batch in each: about ten redraws, not sixty
    expect(redraws).toBeGreaterThanOrEqual(8);
    expect(redraws).toBeLessThanOrEqual(Math.ceil((60 * 16) / REDRAW_MS) + 1);
    for (let i = 0; i < REDRAW_MS / 16 + 1; i++) {
      vi.advanceTimersByTime(16);
      frame();
    }
    expect(last()).toBe("node 0 line 2999"); // and the last batch is drawn once they stop
  });

  it("charts are redrawn at most every CHART_REDRAW_MS, however often points come", () => {
    const { store, host } = mount();
    const value = () => host.querySelector('tr.sw-node[data-node="0"] .sw-chart-value')?.textContent;
    let redraws = 0;
    let shown = value();
    for (let i = 0; i < 60; i++) {
      store.apply({ kind: "delta", seq: ++seq, logs: {}, metrics: true }, [point(0, i, 100 + i)]);
      vi.advanceTimersByTime(16);
      frame();
      if (value() !== shown) redraws++;
      shown = value();
    }
    expect(redraws).toBeGreaterThanOrEqual(3);
    expect(redraws).toBeLessThanOrEqual(Math.ceil((60 * 16) / CHART_REDRAW_MS) + 1);
    for (let i = 0; i < CHART_REDRAW_MS / 16 + 1; i++) {
      vi.advanceTimersByTime(16);
      frame();
    }
    expect(value()).toBe("159"); // the last point, once they stop
  });

  it("a round of chart redraws is spread over frames, CHARTS_PER_FRAME at a time", () => {
    const names = ["a", "b", "c", "d"];
    const many: Summary = { ...summary, nodes: [...Array(16).keys()].map((n) => ({ ...node(n), metrics: names })) };
    const store = new PanelStore();
    store.setSummary(many);
    store.apply({ kind: "snapshot", seq: 0, logs: {}, metrics: false }, undefined);
    const host = document.createElement("div");
    document.body.append(host);
    new PanelView(model, store, host, new AbortController().signal);
    frame();
    for (let n = 0; n < 16; n++) for (const name of names) store.series(n, name).push(new Float64Array([1]), new Float64Array([7]));
    store.apply({ kind: "delta", seq: 1, logs: {}, metrics: false }, undefined);
    const drawn = () => [...host.querySelectorAll(".sw-chart-value")].filter((e) => e.textContent === "7.00").length;
    const perFrame: number[] = [];
    for (let i = 0; i < 12; i++) {
      const before = drawn();
      frame();
      perFrame.push(drawn() - before);
    }
    expect(drawn()).toBe(64);
    expect(Math.max(...perFrame)).toBe(CHARTS_PER_FRAME);
    expect(perFrame.filter((k) => k > 0)).toHaveLength(64 / CHARTS_PER_FRAME);
  });

  it("a closed pane has no log lines in the DOM", () => {
    const { store, host } = mount();
    store.apply(lines(0, 0, 2000), undefined);
    frame();
    expect(host.querySelectorAll(".sw-line")).toHaveLength(0);
    const row = host.querySelector<HTMLElement>('tr.sw-node[data-node="0"]')!;
    row.click();
    frame();
    expect(host.querySelectorAll(".sw-line").length).toBeGreaterThan(0);
    row.click();
    frame();
    expect(host.querySelectorAll(".sw-log")).toHaveLength(0);
  });

  it("opening and closing panes tells the store which nodes' rows to ask for", () => {
    const { store, host, controller } = mount();
    const told: number[][] = [];
    store.onPanes = (nodes) => told.push(nodes);
    host.querySelector<HTMLElement>('tr.sw-node[data-node="1"]')!.click();
    host.querySelector<HTMLElement>('tr.sw-node[data-node="0"]')!.click();
    host.querySelector<HTMLElement>('tr.sw-node[data-node="1"]')!.click();
    controller.abort(); // the view goes: its panes with it
    expect(told).toEqual([[1], [0, 1], [0], []]);
  });

  it("two views of one store (inline and sidebar) show the same rows", () => {
    const { store, host } = mount();
    const side = document.createElement("div");
    document.body.append(side);
    new PanelView(model, store, side, new AbortController().signal);
    frame();
    for (const h of [host, side]) h.querySelector<HTMLElement>('tr.sw-node[data-node="1"]')!.click();
    store.apply(lines(1, 0, 300), undefined);
    frame();
    const text = (h: HTMLElement) => [...h.querySelectorAll(".sw-line")].map((e) => e.textContent);
    expect(text(side)).toEqual(text(host));
    expect(text(host).at(-1)).toBe("node 1 line 299");
  });
});

describe("PanelView state badges", () => {
  it("a node being replaced shows replacing, with its new instance's progress, until ready", () => {
    const { store, host } = mount();
    const badge = () => host.querySelector<HTMLElement>('tr.sw-node[data-node="1"] .sw-badge')!;
    const show = (state: string, phase: string) => {
      store.setSummary({ ...summary, nodes: [node(0), { ...node(1), state, phase, note: "" }] });
      frame();
    };
    show("replacing", "requested");
    expect(badge().textContent).toBe("replacing: requested");
    expect(badge().classList.contains("sw-badge-replacing")).toBe(true);
    show("replacing", "packages");
    expect(badge().textContent).toBe("replacing: packages");
    show("ready", "");
    expect(badge().textContent).toBe("ready");
  });

  it("stateLabel names the phase of a node bootstrapping or being replaced only", () => {
    expect(stateLabel({ state: "bootstrapping", phase: "agent" })).toBe("bootstrapping: agent");
    expect(stateLabel({ state: "replacing", phase: "launched" })).toBe("replacing: launched");
    expect(stateLabel({ state: "replacing", phase: "" })).toBe("replacing");
    expect(stateLabel({ state: "busy", phase: "agent" })).toBe("busy");
  });
});
