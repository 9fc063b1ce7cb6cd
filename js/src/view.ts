// One view of the panel: DOM built once, updated on requestAnimationFrame from the store.

import { drawSparkline, formatValue } from "./chart";
import { renderLine, type Span } from "./logengine";
import type { PanelStore } from "./store";
import type { NodeSummary, PanelModel, Summary } from "./types";

const COLOURS = ["#3b82f6", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#06b6d4"];
const SHOWN_LINES = 400; // the newest rows shown; the store keeps 2,000

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

function styleSpan(span: Span): HTMLElement | Text {
  const s = span.style;
  if (!s.fg && !s.bg && !s.bold && !s.dim && !s.italic && !s.underline && !s.inverse) {
    return document.createTextNode(span.text);
  }
  const e = el("span", "", span.text);
  let fg = s.fg;
  let bg = s.bg;
  if (s.inverse) [fg, bg] = [bg ?? "var(--sw-bg)", fg ?? "var(--sw-fg)"];
  if (fg) e.style.color = fg;
  if (bg) e.style.backgroundColor = bg;
  if (s.bold) e.style.fontWeight = "bold";
  if (s.dim) e.style.opacity = "0.7";
  if (s.italic) e.style.fontStyle = "italic";
  if (s.underline) e.style.textDecoration = "underline";
  return e;
}

interface Row {
  tr: HTMLTableRowElement;
  cells: Record<string, HTMLTableCellElement>;
  charts: Map<string, { canvas: HTMLCanvasElement; value: HTMLElement; version: number }>;
  logTr: HTMLTableRowElement | null;
  logPre: HTMLElement | null;
  lines: Map<number, { el: HTMLElement; version: number }>;
  logVersion: number;
  logEpoch: number;
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
    for (const h of ["node", "instance", "state", "address", "spot", "accelerator", "metrics"]) {
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
        if (this.frame) cancelAnimationFrame(this.frame);
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
    if (this.dirtySummary && summary) this.drawSummary(summary);
    if ((this.dirtyData || this.dirtySummary) && summary) this.drawData(summary);
    this.dirtySummary = this.dirtyData = false;
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
        row.logTr?.remove();
        this.rows.delete(node);
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
    for (const k of ["node", "instance", "state", "address", "spot", "accelerator", "metrics"]) {
      cells[k] = el("td", `sw-${k}`);
      tr.append(cells[k]);
    }
    tr.addEventListener(
      "click",
      () => {
        if (this.open.has(node)) this.open.delete(node);
        else this.open.add(node);
        this.dirtyData = true;
        this.schedule();
      },
      { signal: this.signal },
    );
    row = { tr, cells, charts: new Map(), logTr: null, logPre: null, lines: new Map(), logVersion: -1, logEpoch: -1, key: "" };
    // keep rows in node order
    const after = [...this.rows.keys()].filter((k) => k > node).sort((a, b) => a - b)[0];
    const before = after === undefined ? null : this.rows.get(after)!.tr;
    this.tbody.insertBefore(tr, before);
    this.rows.set(node, row);
    return row;
  }

  private drawNode(n: NodeSummary): void {
    const row = this.row(n.node);
    const state = n.state === "bootstrapping" && n.phase ? `bootstrapping: ${n.phase}` : n.state === "busy" ? "busy" : n.state;
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
    for (const n of s.nodes) {
      const row = this.rows.get(n.node);
      if (!row) continue;
      const byName = this.store.metrics.get(n.node);
      let i = 0;
      for (const [name, chart] of row.charts) {
        const series = byName?.get(name);
        const colour = COLOURS[i++ % COLOURS.length];
        if (!series || series.version === chart.version) continue;
        chart.version = series.version;
        const points = drawSparkline(chart.canvas, series, colour);
        chart.canvas.dataset.points = String(points);
        chart.value.textContent = formatValue(name, series.last());
      }
    }
    for (const n of s.nodes) {
      const row = this.rows.get(n.node);
      if (row) this.drawLog(n.node, row);
    }
  }

  private drawLog(node: number, row: Row): void {
    const isOpen = this.open.has(node);
    row.tr.classList.toggle("sw-open", isOpen);
    if (!isOpen) {
      if (row.logTr) {
        row.logTr.remove();
        row.logTr = row.logPre = null;
        row.lines.clear();
        row.logVersion = -1;
      }
      return;
    }
    if (!row.logTr) {
      row.logTr = el("tr", "sw-log-row");
      const td = el("td");
      td.colSpan = 7;
      row.logPre = el("pre", "sw-log");
      row.logPre.dataset.node = String(node);
      td.append(row.logPre);
      row.logTr.append(td);
      row.tr.after(row.logTr);
    }
    const log = this.store.logs.get(node);
    const pre = row.logPre!;
    if (!log) {
      if (!pre.textContent) pre.textContent = "(no output yet)";
      return;
    }
    if (log.version === row.logVersion) return;
    if (row.logVersion === -1 || row.logEpoch !== log.epoch) {
      pre.replaceChildren();
      row.lines.clear();
      row.logEpoch = log.epoch;
    }
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    // drop lines that left the ring (or the shown window)
    let shownFrom = 0;
    let toSkip = log.rows.size - SHOWN_LINES;
    for (const n of log.rows.keys()) {
      shownFrom = n;
      if (toSkip-- <= 0) break;
    }
    for (const [n, line] of row.lines) {
      if (log.rows.has(n) && n >= shownFrom) continue;
      line.el.remove();
      row.lines.delete(n);
    }
    let tail: HTMLElement | null = null;
    let skip = Math.max(0, log.rows.size - SHOWN_LINES);
    for (const [n, [stream, text, version]] of log.rows) {
      if (skip > 0) {
        skip--;
        continue;
      }
      let line = row.lines.get(n);
      if (line && line.version === version) {
        tail = line.el;
        continue;
      }
      const div = line?.el ?? el("div", "");
      div.className = `sw-line sw-${stream}`;
      div.replaceChildren(...renderLine(text).map(styleSpan));
      if (!div.firstChild) div.append(document.createTextNode(" "));
      if (!line) {
        line = { el: div, version };
        row.lines.set(n, line);
        if (tail) tail.after(div);
        else pre.prepend(div);
      } else {
        line.version = version;
      }
      tail = div;
    }
    row.logVersion = log.version;
    if (stick) pre.scrollTop = pre.scrollHeight;
  }
}
