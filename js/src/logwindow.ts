// The virtual window of a log pane, as arithmetic: which rows are in the DOM for a scroll
// position, how tall the pane and its content are, whether a scroll position is the tail,
// and how often the tail is redrawn. No DOM here. Every size is a constant that
// panel.css also uses, so drawing a pane never has to read layout back.

/** Height of one log line (`.sw-log .sw-line` in panel.css). */
export const LINE_PX = 16;
/** Padding above the first line and below the last one, inside the scrolled content. */
export const PAD_PX = 4;
/** Lines the pane shows once it is full; it is shorter while the log is shorter. */
export const VISIBLE_LINES = 16;
/** Lines kept in the DOM above and below the visible ones, so a scroll finds them drawn. */
export const OVERSCAN = 16;
/**
 * While lines stream in, the tail is redrawn at most this often: at 2,000 lines a second
 * nobody reads each frame, and a redraw every tenth of a second still looks live.
 */
export const REDRAW_MS = 100;

/** Rows `start` (included) to `end` (excluded), by position in the log. */
export interface RowRange {
  start: number;
  end: number;
}

/** The pane's inner height for a log of `count` rows. */
export function paneHeight(count: number): number {
  return Math.min(Math.max(count, 1), VISIBLE_LINES) * LINE_PX + 2 * PAD_PX;
}

/** The height of everything the pane scrolls through. */
export function contentHeight(count: number): number {
  return Math.max(count, 1) * LINE_PX + 2 * PAD_PX;
}

/** The largest scroll offset: the tail in view. */
export function maxScroll(count: number): number {
  return contentHeight(count) - paneHeight(count);
}

/** Whether `scrollTop` shows the tail (within half a line, for zoom's fractional pixels). */
export function atTail(scrollTop: number, count: number): boolean {
  return scrollTop >= maxScroll(count) - LINE_PX / 2;
}

/** Where row `index` starts in the content. */
export function rowTop(index: number): number {
  return PAD_PX + index * LINE_PX;
}

/** The row at the top of the pane when it is scrolled to `scrollTop`. */
export function rowAt(scrollTop: number, count: number): number {
  const index = Math.floor(Math.max(0, scrollTop - PAD_PX) / LINE_PX);
  return Math.max(0, Math.min(index, count - 1));
}

/** The rows to have in the DOM at `scrollTop`: the visible ones and `overscan` either side. */
export function windowAt(scrollTop: number, count: number, overscan = OVERSCAN): RowRange {
  if (count <= 0) return { start: 0, end: 0 };
  const top = rowAt(scrollTop, count);
  return {
    start: Math.max(0, top - overscan),
    end: Math.min(count, top + VISIBLE_LINES + 1 + overscan),
  };
}

/** The rows to have in the DOM when the pane follows the tail. */
export function tailWindow(count: number, overscan = OVERSCAN): RowRange {
  return windowAt(maxScroll(count), count, overscan);
}

/** The index of the first of the ascending `numbers` that is `number` or more. */
export function lowerBound(numbers: ArrayLike<number>, number: number): number {
  let lo = 0;
  let hi = numbers.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (numbers[mid] < number) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
