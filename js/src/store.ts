// The per-model store: one per widget model in a page, shared by all its views.
// It applies the kernel's deltas and snapshots; views read it on their own rAF. It also
// gathers which log panes its views have open: the kernel sends log rows for those only.

import { decodeMetrics, SeriesRing } from "./metrics";
import type { LogRow, Summary, SyncMessage } from "./types";

export const LOG_LINES = 2000;
export const METRIC_POINTS = 1000;

export class NodeLog {
  first = 0;
  rows = new Map<number, [string, string, number]>(); // number -> [stream, text, version]
  version = 0;
  epoch = 0; // bumped when a snapshot replaces every row
  private last = -1; // the highest row number kept: rows are kept in order of their numbers
  private numbers: number[] = [];
  private numbersVersion = -1;

  apply(first: number, rows: LogRow[], replace: boolean): void {
    if (replace) {
      this.rows.clear();
      this.last = -1;
      this.epoch++;
    }
    this.version++;
    let unordered = false;
    for (const [n, stream, text] of rows) {
      const had = this.rows.get(n);
      if (had) {
        had[0] = stream;
        had[1] = text;
        had[2] = this.version;
      } else {
        if (n < this.last) unordered = true; // rows a flood skipped, arriving later
        else this.last = n;
        this.rows.set(n, [stream, text, this.version]);
      }
    }
    if (unordered) this.rows = new Map([...this.rows.entries()].sort((a, b) => a[0] - b[0]));
    this.first = first;
    for (const n of this.rows.keys()) {
      if (n >= first && this.rows.size <= LOG_LINES) break;
      this.rows.delete(n);
    }
    if (!this.rows.size) this.last = -1;
  }

  /** The number of the newest row kept (-1 when there is none). */
  get newest(): number {
    return this.last;
  }

  /** The row numbers kept, ascending (the same array until the log changes). */
  ordered(): readonly number[] {
    if (this.numbersVersion !== this.version) {
      this.numbers = [...this.rows.keys()];
      this.numbersVersion = this.version;
    }
    return this.numbers;
  }
}

export class PanelStore {
  summary: Summary | null = null;
  clockOffset = 0; // kernel clock minus ours, seconds
  logs = new Map<number, NodeLog>();
  metrics = new Map<number, Map<string, SeriesRing>>();
  seq = 0;
  synced = false;
  messages = 0;
  /** This page's name for the store, in what it tells the kernel. */
  readonly client = Math.random().toString(36).slice(2, 10);
  /** Told the nodes whose pane is open in some view, whenever that changes. */
  onPanes: ((nodes: number[]) => void) | null = null;
  private panes = new Map<object, ReadonlySet<number>>();
  private shown = "";
  private listeners = new Set<(what: "summary" | "data") => void>();

  /** The panes `view` has open (null once it is gone). */
  setPanes(view: object, nodes: ReadonlySet<number> | null): void {
    if (nodes && nodes.size) this.panes.set(view, new Set(nodes));
    else this.panes.delete(view);
    const all = this.openPanes();
    const key = all.join(",");
    if (key === this.shown) return;
    this.shown = key;
    this.onPanes?.(all);
  }

  /** The nodes whose pane is open in some view, ascending. */
  openPanes(): number[] {
    const all = new Set<number>();
    for (const nodes of this.panes.values()) for (const n of nodes) all.add(n);
    return [...all].sort((a, b) => a - b);
  }

  subscribe(fn: (what: "summary" | "data") => void, signal: AbortSignal): void {
    this.listeners.add(fn);
    signal.addEventListener("abort", () => this.listeners.delete(fn), { once: true });
  }

  private emit(what: "summary" | "data"): void {
    for (const fn of this.listeners) {
      try {
        fn(what);
      } catch (err) {
        console.error("[skyward] view update failed", err);
      }
    }
  }

  setSummary(summary: Summary | null | undefined): void {
    if (!summary || !summary.cluster) return;
    this.summary = summary;
    if (typeof summary.now === "number") this.clockOffset = summary.now - Date.now() / 1000;
    this.emit("summary");
  }

  /** The kernel's time now (epoch seconds). */
  now(): number {
    return Date.now() / 1000 + this.clockOffset;
  }

  log(node: number): NodeLog {
    let log = this.logs.get(node);
    if (!log) this.logs.set(node, (log = new NodeLog()));
    return log;
  }

  series(node: number, name: string): SeriesRing {
    let byName = this.metrics.get(node);
    if (!byName) this.metrics.set(node, (byName = new Map()));
    let s = byName.get(name);
    if (!s) byName.set(name, (s = new SeriesRing(METRIC_POINTS)));
    return s;
  }

  /**
   * Apply a message; returns false when a delta shows that one was missed (the caller
   * then asks for a snapshot).
   */
  apply(msg: SyncMessage, buffers: ArrayBuffer[] | DataView[] | undefined): boolean {
    this.messages++;
    const snapshot = msg.kind === "snapshot";
    if (!snapshot && this.synced && msg.seq <= this.seq) return true; // already in a snapshot
    const gap = !snapshot && this.synced && msg.seq !== this.seq + 1;
    if (snapshot) {
      for (const log of this.logs.values()) log.apply(log.first, [], true);
      for (const byName of this.metrics.values()) for (const s of byName.values()) s.clear();
    }
    for (const [node, part] of Object.entries(msg.logs ?? {})) {
      this.log(Number(node)).apply(part.first, part.rows, snapshot || Boolean(part.whole));
    }
    if (msg.metrics && buffers && buffers.length) {
      for (const s of decodeMetrics(buffers[0] as ArrayBuffer)) this.series(s.node, s.name).push(s.t, s.v);
    }
    this.seq = Math.max(this.seq, msg.seq);
    if (snapshot) {
      this.seq = msg.seq;
      this.synced = true;
    }
    this.emit("data");
    return !gap;
  }
}
