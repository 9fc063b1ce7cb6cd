import { describe, expect, it, vi } from "vitest";
import {
  atTail,
  contentHeight,
  LINE_PX,
  lowerBound,
  maxScroll,
  OVERSCAN,
  PAD_PX,
  paneHeight,
  REDRAW_MS,
  rowAt,
  rowTop,
  tailWindow,
  VISIBLE_LINES,
  windowAt,
} from "../src/logwindow";
import { RedrawPacer } from "../src/pacer";

describe("the log pane's window", () => {
  it("is as tall as its rows until it is full", () => {
    expect(paneHeight(0)).toBe(LINE_PX + 2 * PAD_PX);
    expect(paneHeight(3)).toBe(3 * LINE_PX + 2 * PAD_PX);
    expect(paneHeight(2000)).toBe(VISIBLE_LINES * LINE_PX + 2 * PAD_PX);
    expect(contentHeight(2000)).toBe(2000 * LINE_PX + 2 * PAD_PX);
    expect(maxScroll(3)).toBe(0);
    expect(maxScroll(2000)).toBe((2000 - VISIBLE_LINES) * LINE_PX);
  });

  it("holds the visible rows and OVERSCAN either side, whatever the log's length", () => {
    expect(windowAt(0, 2000)).toEqual({ start: 0, end: VISIBLE_LINES + 1 + OVERSCAN });
    const mid = rowTop(1000);
    expect(rowAt(mid, 2000)).toBe(1000);
    expect(windowAt(mid, 2000)).toEqual({ start: 1000 - OVERSCAN, end: 1000 + VISIBLE_LINES + 1 + OVERSCAN });
    expect(windowAt(mid + LINE_PX / 2, 2000).start).toBe(1000 - OVERSCAN); // half a line further
    expect(windowAt(0, 5)).toEqual({ start: 0, end: 5 });
    expect(windowAt(0, 0)).toEqual({ start: 0, end: 0 });
    for (const count of [1, 17, 40, 2000]) {
      const w = tailWindow(count);
      expect(w.end).toBe(count);
      expect(w.end - w.start).toBeLessThanOrEqual(VISIBLE_LINES + 1 + OVERSCAN);
    }
  });

  it("a scroll position past the end still draws the last rows", () => {
    expect(windowAt(10 * contentHeight(2000), 2000).end).toBe(2000);
  });

  it("knows the tail within half a line", () => {
    expect(atTail(maxScroll(2000), 2000)).toBe(true);
    expect(atTail(maxScroll(2000) + 15, 2000)).toBe(true); // a horizontal scrollbar's extra
    expect(atTail(maxScroll(2000) - LINE_PX / 4, 2000)).toBe(true);
    expect(atTail(maxScroll(2000) - LINE_PX, 2000)).toBe(false);
    expect(atTail(0, 10)).toBe(true); // a short log is all tail
  });

  it("finds a row number among numbers with gaps", () => {
    const numbers = [3, 4, 9, 10, 50];
    expect(lowerBound(numbers, 9)).toBe(2);
    expect(lowerBound(numbers, 5)).toBe(2);
    expect(lowerBound(numbers, 0)).toBe(0);
    expect(lowerBound(numbers, 51)).toBe(5);
  });
});

describe("RedrawPacer", () => {
  it("lets a redraw happen REDRAW_MS after the last, and wakes the view then", () => {
    vi.useFakeTimers();
    let woken = 0;
    const pacer = new RedrawPacer(REDRAW_MS, () => woken++);
    expect(pacer.due(1000)).toBe(true);
    pacer.drew(1000);
    expect(pacer.due(1000 + REDRAW_MS / 2)).toBe(false);
    expect(pacer.due(1000 + REDRAW_MS / 2 + 1)).toBe(false); // one wake-up for both
    vi.advanceTimersByTime(REDRAW_MS / 2);
    expect(woken).toBe(1);
    expect(pacer.due(1000 + REDRAW_MS)).toBe(true);
    pacer.cancel();
    vi.useRealTimers();
  });
});
