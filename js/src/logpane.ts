// One node's open log pane: a virtualised list of the node's log rows.
//
// Only the rows in view (and OVERSCAN either side) are in the DOM, so a flood costs the
// same as a trickle: a redraw re-renders a few dozen lines, never 2,000. All sizes come
// from logwindow.ts, so drawing never reads layout back. The pane follows the tail; when
// the user scrolls up, or starts selecting text, it holds still on a copy of the rows
// (new lines are counted, not shown) until they scroll back down or press "newest".

import { renderLine, type Span } from "./logengine";
import {
  atTail,
  contentHeight,
  LINE_PX,
  lowerBound,
  maxScroll,
  paneHeight,
  REDRAW_MS,
  rowAt,
  rowTop,
  type RowRange,
  tailWindow,
  windowAt,
} from "./logwindow";
import { RedrawPacer } from "./pacer";
import type { NodeLog } from "./store";

/** Rows a pane draws from: the live log, or the copy it holds while the user reads. */
interface Rows {
  numbers: readonly number[];
  row(index: number): readonly [stream: string, text: string, version: number];
}

function liveRows(log: NodeLog): Rows {
  const numbers = log.ordered();
  return { numbers, row: (i) => log.rows.get(numbers[i])! };
}

function heldRows(log: NodeLog): Rows {
  const numbers = [...log.ordered()];
  const rows = numbers.map((n) => {
    const [stream, text, version] = log.rows.get(n)!;
    return [stream, text, version] as const;
  });
  return { numbers, row: (i) => rows[i] };
}

const EMPTY_ROWS: Rows = { numbers: [], row: () => ["meta", "", 0] };

function element<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  return e;
}

export function styleSpan(span: Span): HTMLElement | Text {
  const s = span.style;
  if (!s.fg && !s.bg && !s.bold && !s.dim && !s.italic && !s.underline && !s.inverse) {
    return document.createTextNode(span.text);
  }
  const e = document.createElement("span");
  e.textContent = span.text;
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

interface Line {
  el: HTMLElement;
  version: number;
}

export class LogPane {
  /** The table row that holds the pane (inserted by the view after the node's row). */
  readonly tr = element("tr", "sw-log-row");
  /** The scrolled box. */
  readonly pre = element("pre", "sw-log");
  private space = element("div", "sw-log-space");
  private win = element("div", "sw-log-window");
  private jump = element("button", "sw-log-jump");
  private lines = new Map<number, Line>(); // row number -> its element, in row order
  private spare: HTMLElement[] = [];
  private pacer: RedrawPacer;
  private held: Rows | null = null; // the rows shown while the user reads above the tail
  private shown: Rows = EMPTY_ROWS; // the rows the DOM was last drawn from
  private drawnVersion = -1;
  private drawnRange: RowRange = { start: -1, end: -1 };
  private drawnCount = -1;
  private live: NodeLog | null = null; // the log shown, from which holding copies rows
  private newest = -1;
  private scrollTop = 0; // as the last scroll event (or our own write) left it
  private scrollTo: number | null = null; // a scroll position the next draw writes
  private pressed = false; // held by a press that may turn out to be a plain click
  private empty: HTMLElement | null = null;
  private urgent = true; // the next draw is the user's (open, scroll, jump): not paced
  private controller = new AbortController();

  constructor(
    node: number,
    columns: number,
    private request: () => void,
    signal: AbortSignal,
  ) {
    this.pacer = new RedrawPacer(REDRAW_MS, request);
    const td = element("td", "");
    td.colSpan = columns;
    const box = element("div", "sw-log-box");
    this.pre.dataset.node = String(node);
    this.pre.dataset.follow = "1";
    this.space.append(this.win);
    this.pre.append(this.space);
    this.jump.type = "button";
    this.jump.hidden = true;
    this.jump.title = "Follow the newest lines";
    box.append(this.pre, this.jump);
    td.append(box);
    this.tr.append(td);
    const own = this.controller.signal;
    signal.addEventListener("abort", () => this.close(), { once: true, signal: own });
    this.pre.addEventListener("scroll", this.onScroll, { passive: true, signal: own });
    // A press on the text may start a selection: hold the rows still under it, and let
    // go again if it was only a click.
    this.win.addEventListener("pointerdown", this.onPress, { signal: own });
    document.addEventListener("pointerup", this.onRelease, { signal: own });
    document.addEventListener("selectionchange", this.onSelection, { signal: own });
    this.jump.addEventListener(
      "click",
      (ev) => {
        ev.stopPropagation();
        this.follow();
      },
      { signal: own },
    );
  }

  /** Whether the pane follows the tail (false while it holds still for the user). */
  get following(): boolean {
    return this.held === null;
  }

  /** Bring the DOM up to date with `log`; called in the view's animation frame. */
  update(log: NodeLog | undefined, now: number): void {
    if (this.controller.signal.aborted) return;
    this.live = log ?? null;
    if (log) this.newest = log.newest;
    if (this.held) {
      this.draw(this.held, windowAt(this.scrollTop, this.held.numbers.length), false);
      this.label();
      return;
    }
    if (!log) {
      if (!this.drawnCount) return;
      this.draw(EMPTY_ROWS, { start: 0, end: 0 }, true);
      return;
    }
    if (!this.urgent && (log.version === this.drawnVersion || !this.pacer.due(now))) return;
    this.urgent = false;
    this.pacer.drew(now);
    this.drawnVersion = log.version;
    const rows = liveRows(log);
    this.draw(rows, tailWindow(rows.numbers.length), true);
  }

  /** Stop holding: show the newest lines and follow them again. */
  follow(): void {
    this.held = null;
    this.pressed = false;
    this.pre.dataset.follow = "1";
    this.jump.hidden = true;
    this.urgent = true;
    this.request();
  }

  /** Hold the rows still (the user reads or selects above the tail). */
  hold(): void {
    if (this.held || !this.live) return;
    const shown = this.shown;
    const top = rowAt(this.scrollTop, shown.numbers.length);
    this.held = heldRows(this.live);
    // The copy may hold rows the screen has not shown yet: keep the top row in place.
    const index = lowerBound(this.held.numbers, shown.numbers[top] ?? 0);
    this.scrollTop = Math.max(0, this.scrollTop + (index - top) * LINE_PX);
    this.scrollTo = this.scrollTop;
    this.pre.dataset.follow = "0";
    this.jump.hidden = false;
    this.request();
  }

  close(): void {
    this.controller.abort();
    this.pacer.cancel();
    this.tr.remove();
  }

  private onScroll = (): void => {
    const top = this.pre.scrollTop;
    if (top === this.scrollTop) return; // a horizontal scroll, or our own write
    this.scrollTop = top;
    const count = (this.held ?? this.shown).numbers.length;
    if (this.held && atTail(top, count)) this.follow();
    else if (!this.held && !atTail(top, count)) this.hold();
    else if (this.held) this.request();
  };

  private onPress = (): void => {
    if (this.held) return;
    this.hold();
    this.pressed = this.held !== null;
  };

  private onRelease = (): void => {
    if (!this.pressed) return;
    this.pressed = false;
    if (document.getSelection()?.isCollapsed ?? true) this.follow();
  };

  private onSelection = (): void => {
    const selection = document.getSelection();
    if (!selection || selection.isCollapsed || !selection.anchorNode) return;
    if (this.pre.contains(selection.anchorNode)) this.hold();
  };

  private label(): void {
    const held = this.held;
    if (!held) return;
    const last = held.numbers[held.numbers.length - 1] ?? -1;
    const fresh = Math.max(0, this.newest - last);
    const text = fresh ? `↓ ${fresh.toLocaleString("en-US")} new lines` : "↓ newest";
    if (this.jump.textContent !== text) this.jump.textContent = text;
  }

  /** Make the DOM hold rows `range` of `rows`: the only writes, in one batch. */
  private draw(rows: Rows, range: RowRange, tail: boolean): void {
    const count = rows.numbers.length;
    const sameRows = rows === this.shown;
    if (sameRows && range.start === this.drawnRange.start && range.end === this.drawnRange.end && !tail) {
      return;
    }
    this.shown = rows;
    if (count !== this.drawnCount) {
      this.pre.style.height = `${paneHeight(count)}px`;
      this.space.style.height = `${contentHeight(count)}px`;
      this.drawnCount = count;
    }
    this.win.style.transform = `translateY(${rowTop(range.start)}px)`;
    const keep = new Set<number>();
    for (let i = range.start; i < range.end; i++) keep.add(rows.numbers[i]);
    for (const [n, line] of this.lines) {
      if (keep.has(n)) continue;
      line.el.remove();
      this.spare.push(line.el);
      this.lines.delete(n);
    }
    let previous: HTMLElement | null = null;
    for (let i = range.start; i < range.end; i++) {
      const n = rows.numbers[i];
      const [stream, text, version] = rows.row(i);
      let line = this.lines.get(n);
      if (!line) {
        line = { el: this.spare.pop() ?? element("div", ""), version: -1 };
        this.lines.set(n, line);
      }
      if (line.version !== version) {
        line.version = version;
        line.el.className = `sw-line sw-${stream}`;
        const spans = renderLine(text);
        if (spans.length) line.el.replaceChildren(...spans.map(styleSpan));
        else line.el.textContent = " ";
      }
      const at: ChildNode | null = previous ? previous.nextSibling : this.win.firstChild;
      if (at !== line.el) this.win.insertBefore(line.el, at);
      previous = line.el;
    }
    if (!count) {
      this.empty ??= element("div", "sw-line sw-meta sw-empty");
      this.empty.textContent = "(no output yet)";
      this.win.append(this.empty);
    } else {
      this.empty?.remove();
    }
    this.drawnRange = range;
    if (tail) {
      // Past the end: the browser clamps to the true bottom (a horizontal scrollbar
      // included), and the scroll event that follows finds the pane at its tail.
      const bottom = maxScroll(count);
      if (this.scrollTop < bottom) {
        this.pre.scrollTop = contentHeight(count);
        this.scrollTop = bottom;
      }
    } else if (this.scrollTo !== null) {
      this.pre.scrollTop = this.scrollTo;
    }
    this.scrollTo = null;
  }
}
