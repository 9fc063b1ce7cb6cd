import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LogPane } from "../src/logpane";
import { LINE_PX, maxScroll, OVERSCAN, REDRAW_MS, rowTop, VISIBLE_LINES } from "../src/logwindow";
import { NodeLog } from "../src/store";
import type { LogRow } from "../src/types";

const WINDOW = VISIBLE_LINES + 1 + OVERSCAN; // rows in the DOM at the tail

function rows(from: number, to: number, stream = "stdout"): LogRow[] {
  const out: LogRow[] = [];
  for (let n = from; n < to; n++) out.push([n, stream, `line ${n}`]);
  return out;
}

function logOf(from: number, to: number): NodeLog {
  const log = new NodeLog();
  log.apply(Math.max(from, to - 2000), rows(from, to), false);
  return log;
}

let panes: { pane: LogPane; controller: AbortController }[] = [];

function mount(): { pane: LogPane; requests: () => number; controller: AbortController } {
  let requests = 0;
  const controller = new AbortController();
  const pane = new LogPane(0, 7, () => requests++, controller.signal);
  const table = document.createElement("table");
  const body = document.createElement("tbody");
  body.append(pane.tr);
  table.append(body);
  document.body.append(table);
  panes.push({ pane, controller });
  return { pane, requests: () => requests, controller };
}

const lines = (pane: LogPane) => [...pane.pre.querySelectorAll<HTMLElement>(".sw-line")];
const texts = (pane: LogPane) => lines(pane).map((e) => e.textContent);

function scrollTo(pane: LogPane, top: number): void {
  pane.pre.scrollTop = top;
  pane.pre.dispatchEvent(new Event("scroll"));
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  for (const { controller } of panes) controller.abort();
  panes = [];
  document.body.replaceChildren();
  vi.useRealTimers();
});

describe("LogPane: the virtual window", () => {
  it("puts only the tail's rows in the DOM, not the 2,000 kept", () => {
    const { pane } = mount();
    const log = logOf(0, 5000);
    pane.update(log, 0);
    expect(log.rows.size).toBe(2000);
    expect(lines(pane)).toHaveLength(WINDOW);
    expect(texts(pane).at(-1)).toBe("line 4999");
    expect(texts(pane)[0]).toBe(`line ${5000 - WINDOW}`);
    expect(pane.pre.style.height).toBe(`${VISIBLE_LINES * LINE_PX + 8}px`);
    expect(pane.pre.scrollTop).toBeGreaterThanOrEqual(maxScroll(2000));
    expect(pane.following).toBe(true);
  });

  it("a short log is drawn whole, and grows until the pane is full", () => {
    const { pane } = mount();
    const log = logOf(0, 3);
    pane.update(log, 0);
    expect(texts(pane)).toEqual(["line 0", "line 1", "line 2"]);
    expect(pane.pre.style.height).toBe(`${3 * LINE_PX + 8}px`);
  });

  it("shows a placeholder before any output", () => {
    const { pane } = mount();
    pane.update(undefined, 0);
    expect(texts(pane)).toEqual(["(no output yet)"]);
    pane.update(logOf(0, 1), 0);
    expect(texts(pane)).toEqual(["line 0"]);
  });

  it("re-renders only rows that changed, and keeps the elements of the others", () => {
    const { pane } = mount();
    const log = logOf(0, 100);
    pane.update(log, 0);
    const before = lines(pane);
    log.apply(0, [[99, "stderr", "100%|##########| 10/10"]], false);
    pane.update(log, REDRAW_MS);
    const after = lines(pane);
    expect(after.slice(0, -1)).toEqual(before.slice(0, -1)); // the same elements
    expect(after.at(-1)).toBe(before.at(-1));
    expect(after.at(-1)!.className).toBe("sw-line sw-stderr");
    expect(after.at(-1)!.textContent).toBe("100%|##########| 10/10");
  });

  it("keeps ANSI colours as styled spans", () => {
    const { pane } = mount();
    const log = new NodeLog();
    log.apply(0, [[0, "stdout", "step 1: \x1b[32mok\x1b[0m"]], false);
    pane.update(log, 0);
    const span = lines(pane)[0].querySelector("span")!;
    expect(span.textContent).toBe("ok");
    expect(span.style.color).toBeTruthy();
    expect(lines(pane)[0].textContent).toBe("step 1: ok");
  });
});

describe("LogPane: redraws under a flood", () => {
  it("follows the tail at most once every REDRAW_MS, and catches up after", () => {
    const { pane, requests } = mount();
    const log = logOf(0, 2000);
    pane.update(log, 0);
    const asked = requests();
    log.apply(10, rows(2000, 2010), false);
    pane.update(log, 16); // the next frame: too soon
    expect(texts(pane).at(-1)).toBe("line 1999");
    log.apply(20, rows(2010, 2020), false);
    pane.update(log, 32);
    vi.advanceTimersByTime(REDRAW_MS);
    expect(requests()).toBe(asked + 1); // one timer for both
    pane.update(log, REDRAW_MS);
    expect(texts(pane).at(-1)).toBe("line 2019");
    expect(lines(pane)).toHaveLength(WINDOW);
  });

  it("does nothing when the log did not change", () => {
    const { pane } = mount();
    const log = logOf(0, 50);
    pane.update(log, 0);
    const observer = new MutationObserver(() => undefined);
    observer.observe(pane.pre, { subtree: true, childList: true, characterData: true, attributes: true });
    pane.update(log, 1000);
    expect(observer.takeRecords()).toEqual([]);
    observer.disconnect();
  });
});

describe("LogPane: scrolling up, and back to the tail", () => {
  it("scrolling up holds the rows still; new lines are counted; the button goes back", () => {
    const { pane, requests } = mount();
    const log = logOf(0, 2000);
    pane.update(log, 0);
    scrollTo(pane, rowTop(100));
    expect(pane.following).toBe(false);
    expect(requests()).toBeGreaterThan(0);
    pane.update(log, 16);
    expect(texts(pane)[0]).toBe(`line ${100 - OVERSCAN}`);
    expect(lines(pane)).toHaveLength(VISIBLE_LINES + 1 + 2 * OVERSCAN);
    const held = texts(pane);
    log.apply(500, rows(2000, 2500), false); // the ring moves on: row 100 is gone from it
    pane.update(log, 1000);
    expect(texts(pane)).toEqual(held);
    const jump = pane.tr.querySelector<HTMLButtonElement>(".sw-log-jump")!;
    expect(jump.hidden).toBe(false);
    expect(jump.textContent).toBe("↓ 500 new lines");
    jump.click();
    expect(pane.following).toBe(true);
    pane.update(log, 1016);
    expect(texts(pane).at(-1)).toBe("line 2499");
    expect(jump.hidden).toBe(true);
  });

  it("scrolling back down to the bottom follows again", () => {
    const { pane } = mount();
    const log = logOf(0, 2000);
    pane.update(log, 0);
    scrollTo(pane, rowTop(10));
    pane.update(log, 16);
    log.apply(100, rows(2000, 2100), false);
    scrollTo(pane, maxScroll(2000));
    expect(pane.following).toBe(true);
    pane.update(log, 32);
    expect(texts(pane).at(-1)).toBe("line 2099");
  });

  it("holding keeps the row at the top in place, though the ring moved on since", () => {
    const { pane } = mount();
    const log = logOf(0, 2000);
    pane.update(log, 0);
    log.apply(0, rows(2000, 2005), false); // not drawn yet (paced); rows 0-4 left the ring
    pane.update(log, 16);
    scrollTo(pane, rowTop(1900));
    pane.update(log, 32);
    expect(pane.pre.scrollTop).toBe(rowTop(1895)); // five rows fewer above it
    expect(texts(pane)[OVERSCAN]).toBe("line 1900"); // still at the top
  });

  it("a press on the text holds the rows; a plain click lets go", () => {
    const { pane } = mount();
    const log = logOf(0, 2000);
    pane.update(log, 0);
    lines(pane)[3].dispatchEvent(new Event("pointerdown", { bubbles: true }));
    expect(pane.following).toBe(false);
    document.dispatchEvent(new Event("pointerup"));
    expect(pane.following).toBe(true);
  });

  it("a selection in the pane holds the rows under it", () => {
    const { pane } = mount();
    const log = logOf(0, 2000);
    pane.update(log, 0);
    const target = lines(pane)[5];
    target.dispatchEvent(new Event("pointerdown", { bubbles: true }));
    const range = document.createRange();
    range.selectNodeContents(target);
    document.getSelection()!.removeAllRanges();
    document.getSelection()!.addRange(range);
    document.dispatchEvent(new Event("selectionchange"));
    document.dispatchEvent(new Event("pointerup"));
    expect(pane.following).toBe(false);
    log.apply(100, rows(2000, 2100), false);
    pane.update(log, 1000);
    expect(target.isConnected).toBe(true);
    expect(target.textContent).toBe(document.getSelection()!.toString());
  });
});
