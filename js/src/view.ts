// One view of the panel: DOM built once, updated on requestAnimationFrame from the store.

import { CHART_REDRAW_MS, drawSparkline, formatValue } from "./chart";
import { LogPane } from "./logpane";
import type { SeriesRing } from "./metrics";
import { RedrawPacer } from "./pacer";
import type { PanelStore } from "./store";
import type { NodeSummary, PanelModel, Summary } from "./types";

const COLOURS = ["#3b82f6", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#06b6d4"];
const COLUMNS = ["node", "instance", "state", "address", "spot", "accelerator", "metrics"];

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls = "",
  text = "",
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

export function cost(summary: Summary, now: number): number {
  let total = 0;
  for (const n of summary.nodes) {
    if (n.started_at == null || !n.price_per_hour) continue;
    const end = n.ended_at ?? now;
    total += (Math.max(0, end - n.started_at) / 3600) * n.price_per_hour;
  }
  return total;
}

/** The text of a node's state badge: a node being bootstrapped or replaced shows how far
 * it (its new instance) has come. */
export function stateLabel(n: Pick<NodeSummary, "state" | "phase">): string {
  if ((n.state === "bootstrapping" || n.state === "replacing") && n.phase) return `${n.state}: ${n.phase}`;
  return n.state;
}

/** Charts drawn in one frame at most. */
export const CHARTS_PER_FRAME = 8;

interface Chart {
  canvas: HTMLCanvasElement;
  value: HTMLElement;
  version: number;
}

interface StaleChart {
  name: string;
  chart: Chart;
  series: SeriesRing;
  colour: string;
}

interface Row {
  tr: HTMLTableRowElement;
  cells: Record<string, HTMLTableCellElement>;
  charts: Map<string, Chart>;
  pane: LogPane | null;
  key: string;
}

export class PanelView {
  private root = el("div", "sw-panel");
  private head = el("div", "sw-head");
  private title = el("span", "sw-title");
  private facts = el("span", "sw-facts");
  private note = el("div", "sw-note");
  private banner = el("div", "sw-banner");
  private tbody = el("tbody");
  private rows = new Map<number, Row>();
  private open = new Set<number>();
  private dismissed = new Set<string>();
  private frame = 0;
  private dirtySummary = true;
  private dirtyData = true;
  private charts = new RedrawPacer(CHART_REDRAW_MS, () => this.redraw());
  private chartQueue: StaleChart[] = [];

  constructor(
    private model: PanelModel,
    private store: PanelStore,
    host: HTMLElement,
    private signal: AbortSignal,
  ) {
    const buttons = el("span", "sw-buttons");
    const interrupt = el("button", "sw-button", "Interrupt");
    interrupt.dataset.action = "interrupt";
    interrupt.title = "Interrupt the running cell (the cluster stays up)";
    const shutdown = el("button", "sw-button sw-danger", "Shut down");
    shutdown.dataset.action = "shutdown";
    shutdown.title = "Destroy every instance of the cluster";
    buttons.append(interrupt, shutdown);
    for (const b of [interrupt, shutdown]) {
      b.addEventListener(
        "click",
        (ev) => {
          ev.stopPropagation();
          const kind = b.dataset.action as "shutdown" | "interrupt";
          if (kind === "shutdown" && b.dataset.armed !== "1") {
            b.dataset.armed = "1";
            b.textContent = "Confirm shut down";
            setTimeout(() => {
              b.dataset.armed = "";
              b.textContent = "Shut down";
            }, 4000);
            return;
          }
          b.dataset.armed = "";
          b.textContent = kind === "shutdown" ? "Shut down" : "Interrupt";
          this.model.send({ kind });
        },
        { signal },
      );
    }
    this.head.append(this.title, this.facts, buttons);
    const table = el("table", "sw-nodes");
    const thead = el("thead");
    const hr = el("tr");
    for (const h of COLUMNS) {
      hr.append(el("th", `sw-${h}`, h));
    }
    thead.append(hr);
    table.append(thead, this.tbody);
    this.root.append(this.head, this.note, this.banner, table);
    host.append(this.root);
    store.subscribe((what) => {
      if (what === "summary") this.dirtySummary = true;
      else this.dirtyData = true;
      this.schedule();
    }, signal);
    model.on("change:subshells", this.onSubshells);
    signal.addEventListener("abort", () => {
      try {
        model.off("change:subshells", this.onSubshells);
        this.store.setPanes(this, null);
        if (this.frame) cancelAnimationFrame(this.frame);
        this.charts.cancel();
        this.root.remove();
      } catch (err) {
        console.error("[skyward] view cleanup failed", err);
      }
    });
    const tick = setInterval(() => {
      this.dirtySummary = true;
      this.schedule();
    }, 1000);
    signal.addEventListener("abort", () => clearInterval(tick));
    this.schedule();
  }

  private onSubshells = () => {
    this.dirtySummary = true;
    this.schedule();
  };

  private schedule(): void {
    if (this.frame || this.signal.aborted) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      try {
        this.draw();
      } catch (err) {
        console.error("[skyward] draw failed", err);
      }
    });
  }

  draw(): void {
    const summary = this.store.summary;
    const dirtySummary = this.dirtySummary;
    const dirty = this.dirtyData || dirtySummary;
    this.dirtySummary = this.dirtyData = false; // what drawing asks for is the next frame's
    if (dirtySummary && summary) this.drawSummary(summary);
    if (dirty && summary) this.drawData(summary);
  }

  private drawSummary(s: Summary): void {
    const c = s.cluster;
    const now = this.store.now();
    this.root.dataset.clusterState = c.state || "none";
    this.root.dataset.clusterId = c.id;
    this.title.textContent = c.id || c.state ? `skyward · ${c.name || c.id || "…"}` : "skyward · no cluster yet";
    if (c.state) {
      const start = c.requested_at ?? now;
      const uptime = (c.ended_at ?? now) - start;
      const parts = [
        c.name && c.id ? c.id : "",
        c.provider,
        c.state,
        `${s.nodes.length || c.nodes} node(s)`,
        `up ${formatDuration(uptime)}`,
        `$${c.price_per_hour.toFixed(2)}/h`,
        `$${cost(s, now).toFixed(c.price_per_hour ? 4 : 2)} so far`,
      ].filter(Boolean);
      this.facts.textContent = parts.join(" · ");
      this.facts.dataset.state = c.state;
    } else {
      this.facts.textContent = "";
    }
    const live = Boolean(c.state) && c.state !== "destroyed";
    for (const b of this.head.querySelectorAll<HTMLButtonElement>("button.sw-button")) b.disabled = !live;
    const sub = this.model.get("subshells");
    this.note.textContent =
      sub === true ? "" : "This frontend has no comm subshells: the buttons act when the kernel is idle.";
    this.note.hidden = sub === true;
    this.drawErrors(s);
    const seen = new Set<number>();
    for (const n of s.nodes) {
      seen.add(n.node);
      this.drawNode(n);
    }
    for (const [node, row] of this.rows) {
      if (!seen.has(node)) {
        row.tr.remove();
        row.pane?.close();
        this.rows.delete(node);
        if (this.open.delete(node)) this.store.setPanes(this, this.open);
      }
    }
  }

  private drawErrors(s: Summary): void {
    const shown = s.errors.filter((e) => !this.dismissed.has(`${e.at}:${e.message}`)).slice(-3);
    this.banner.replaceChildren();
    this.banner.hidden = shown.length === 0;
    for (const e of shown) {
      const item = el("div", e.fatal ? "sw-error sw-fatal" : "sw-error");
      item.append(el("span", "", e.message));
      const close = el("button", "sw-dismiss", "×");
      close.title = "Dismiss";
      close.addEventListener("click", () => {
        this.dismissed.add(`${e.at}:${e.message}`);
        this.dirtySummary = true;
        this.schedule();
      });
      item.append(close);
      this.banner.append(item);
    }
  }

  private row(node: number): Row {
    let row = this.rows.get(node);
    if (row) return row;
    const tr = el("tr", "sw-node");
    tr.dataset.node = String(node);
    tr.title = "Show this node's log";
    const cells: Record<string, HTMLTableCellElement> = {};
    for (const k of COLUMNS) {
      cells[k] = el("td", `sw-${k}`);
      tr.append(cells[k]);
    }
    tr.addEventListener(
      "click",
      () => {
        if (this.open.has(node)) this.open.delete(node);
        else this.open.add(node);
        this.store.setPanes(this, this.open);
        this.dirtyData = true;
        this.schedule();
      },
      { signal: this.signal },
    );
    row = { tr, cells, charts: new Map(), pane: null, key: "" };
    // keep rows in node order
    const after = [...this.rows.keys()].filter((k) => k > node).sort((a, b) => a - b)[0];
    const before = after === undefined ? null : this.rows.get(after)!.tr;
    this.tbody.insertBefore(tr, before);
    this.rows.set(node, row);
    return row;
  }

  private drawNode(n: NodeSummary): void {
    const row = this.row(n.node);
    const state = stateLabel(n);
    const key = JSON.stringify([n.instance_id, state, n.address, n.spot, n.accelerator, n.instance_type, n.note, n.task]);
    row.tr.dataset.state = n.state;
    if (key !== row.key) {
      row.key = key;
      row.cells.node.textContent = String(n.node);
      row.cells.instance.textContent = n.instance_id || "–";
      row.cells.state.replaceChildren(el("span", `sw-badge sw-badge-${n.state.replace(/\s+/g, "-")}`, state));
      if (n.state === "busy" && n.task) row.cells.state.title = `running ${n.task}`;
      if (n.note) row.cells.state.append(el("span", "sw-note-inline", ` ${n.note}`));
      row.cells.address.textContent = n.address || "–";
      row.cells.spot.textContent = n.spot ? "spot" : "on-demand";
      row.cells.accelerator.textContent = n.accelerator || (n.instance_type ? "cpu" : "–");
    }
    for (const name of n.metrics) {
      if (!row.charts.has(name)) {
        const box = el("span", "sw-chart");
        const label = el("span", "sw-chart-label", name.replace(/_percent$/, "").replace(/_gb$/, ""));
        const canvas = el("canvas");
        canvas.dataset.metric = name;
        canvas.dataset.points = "0";
        const value = el("span", "sw-chart-value");
        box.append(label, canvas, value);
        row.cells.metrics.append(box);
        row.charts.set(name, { canvas, value, version: -1 });
      }
    }
  }

  private drawData(s: Summary): void {
    // Logs first: a pane that follows its tail sets its scroll offset, which lays out
    // whatever is dirty by then; before the charts' values change, that is the pane alone.
    const now = performance.now();
    for (const n of s.nodes) {
      const row = this.rows.get(n.node);
      if (row) this.drawLog(n.node, row, now);
    }
    // A round of chart redraws is spread over frames, CHARTS_PER_FRAME at a time: 16
    // nodes of 4 metrics each drawn in one frame made it long.
    if (!this.chartQueue.length && this.chartsStale(s) && this.charts.due(now)) {
      this.charts.drew(now);
      this.chartQueue = this.staleCharts(s);
    }
    if (this.chartQueue.length) {
      for (const chart of this.chartQueue.splice(0, CHARTS_PER_FRAME)) this.drawChart(chart);
      if (this.chartQueue.length) this.redraw();
    }
  }

  private chartsStale(s: Summary): boolean {
    for (const n of s.nodes) {
      const byName = this.store.metrics.get(n.node);
      const row = this.rows.get(n.node);
      if (!byName || !row) continue;
      for (const [name, chart] of row.charts) {
        const series = byName.get(name);
        if (series && series.version !== chart.version) return true;
      }
    }
    return false;
  }

  /** The charts whose series changed since they were drawn, in the order of the rows. */
  private staleCharts(s: Summary): StaleChart[] {
    const out: StaleChart[] = [];
    for (const n of s.nodes) {
      const row = this.rows.get(n.node);
      if (!row) continue;
      const byName = this.store.metrics.get(n.node);
      let i = 0;
      for (const [name, chart] of row.charts) {
        const series = byName?.get(name);
        const colour = COLOURS[i++ % COLOURS.length];
        if (series && series.version !== chart.version) out.push({ name, chart, series, colour });
      }
    }
    return out;
  }

  private drawChart({ name, chart, series, colour }: StaleChart): void {
    if (!chart.canvas.isConnected) return;
    chart.version = series.version;
    const points = drawSparkline(chart.canvas, series, colour);
    chart.canvas.dataset.points = String(points);
    chart.value.textContent = formatValue(name, series.last());
  }

  private drawLog(node: number, row: Row, now: number): void {
    const isOpen = this.open.has(node);
    row.tr.classList.toggle("sw-open", isOpen);
    if (!isOpen) {
      row.pane?.close();
      row.pane = null;
      return;
    }
    if (!row.pane) {
      row.pane = new LogPane(node, COLUMNS.length, this.redraw, this.signal);
      row.tr.after(row.pane.tr);
    }
    row.pane.update(this.store.logs.get(node), now);
  }

  private redraw = (): void => {
    this.dirtyData = true;
    this.schedule();
  };
}
