// A small live chart per metric: plain canvas, drawn only when its series changed.

import type { SeriesRing } from "./metrics";

export const WINDOW_SECONDS = 300;
/**
 * Charts are redrawn at most this often: a pixel of a chart is three seconds of its
 * window, and a value that changes faster than four times a second cannot be read.
 */
export const CHART_REDRAW_MS = 250;
export const CHART_WIDTH = 96;
export const CHART_HEIGHT = 22;

export function formatValue(name: string, v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "–";
  if (name.endsWith("percent")) return `${v.toFixed(0)}%`;
  if (name.endsWith("_gb")) return `${v.toFixed(2)} GB`;
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1e5)) return v.toExponential(2);
  return a >= 100 ? v.toFixed(0) : v.toPrecision(3);
}

/** Draw the last WINDOW_SECONDS of `s` into `canvas`; returns the points drawn. */
export function drawSparkline(canvas: HTMLCanvasElement, s: SeriesRing, colour: string): number {
  // The size is fixed (CSS says the same): reading clientWidth here would force a
  // layout per chart after the log's DOM changed, which is what made frames long.
  const ctx = canvas.getContext("2d");
  const dpr = globalThis.devicePixelRatio || 1;
  const w = CHART_WIDTH;
  const h = CHART_HEIGHT;
  if (canvas.width !== Math.round(w * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  if (!ctx) return 0;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const n = s.length;
  if (!n) return 0;
  const tEnd = s.t[n - 1];
  let start = n - 1;
  while (start > 0 && s.t[start - 1] >= tEnd - WINDOW_SECONDS) start--;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = start; i < n; i++) {
    const v = s.v[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (hi === lo) {
    hi += 0.5;
    lo -= 0.5;
  }
  const tStart = Math.min(s.t[start], tEnd - 1);
  const x = (t: number) => ((t - tStart) / (tEnd - tStart)) * (w - 2) + 1;
  const y = (v: number) => h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
  ctx.beginPath();
  ctx.moveTo(x(s.t[start]), y(s.v[start]));
  // At most one segment per pixel column: 1,000 points draw as fast as 100.
  let lastX = -1;
  for (let i = start + 1; i < n; i++) {
    const px = Math.round(x(s.t[i]));
    if (px === lastX && i !== n - 1) continue;
    lastX = px;
    ctx.lineTo(x(s.t[i]), y(s.v[i]));
  }
  ctx.strokeStyle = colour;
  ctx.lineWidth = 1.25;
  ctx.stroke();
  return n - start;
}
