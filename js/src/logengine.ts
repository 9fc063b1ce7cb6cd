// The log-line engine: pure functions and classes, no DOM.
//
// - `Terminal` interprets raw output as a terminal would for log purposes: "\r" (back to
//   column 0), "\n", "\b" (back one column), "\t", CSI cursor moves (ESC[nA up as tqdm
//   uses for several bars, B, C, D, G), erase in line (ESC[K), and SGR colours/styles
//   (ESC[...m, 16/256/true colour). Other escapes are dropped.
// - `LineRecords` applies the (stream, line, overwrite) records the agent sends, with the
//   same rules as the kernel's LogRing (skyward/jupyter/panel/state.py).
// - `renderLine` turns one row's text into styled spans.

export interface Style {
  fg?: string;
  bg?: string;
  bold?: boolean;
  dim?: boolean;
  italic?: boolean;
  underline?: boolean;
  inverse?: boolean;
}

export interface Span {
  text: string;
  style: Style;
}

const BASE16 = [
  "#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
  "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
];

/** The colour of 256-colour palette entry `n`. */
export function palette256(n: number): string {
  if (n < 16) return BASE16[n];
  if (n < 232) {
    const i = n - 16;
    const level = (x: number) => (x === 0 ? 0 : 55 + x * 40);
    const r = level(Math.floor(i / 36));
    const g = level(Math.floor(i / 6) % 6);
    const b = level(i % 6);
    return `rgb(${r},${g},${b})`;
  }
  const grey = 8 + (n - 232) * 10;
  return `rgb(${grey},${grey},${grey})`;
}

/** Apply the parameters of one SGR sequence to `style` (returns a new style). */
export function applySGR(style: Style, params: number[]): Style {
  const s: Style = { ...style };
  if (params.length === 0) params = [0];
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    if (p === 0) {
      for (const k of Object.keys(s)) delete (s as Record<string, unknown>)[k];
    } else if (p === 1) s.bold = true;
    else if (p === 2) s.dim = true;
    else if (p === 3) s.italic = true;
    else if (p === 4) s.underline = true;
    else if (p === 7) s.inverse = true;
    else if (p === 22) { delete s.bold; delete s.dim; }
    else if (p === 23) delete s.italic;
    else if (p === 24) delete s.underline;
    else if (p === 27) delete s.inverse;
    else if (p >= 30 && p <= 37) s.fg = BASE16[p - 30];
    else if (p >= 90 && p <= 97) s.fg = BASE16[p - 90 + 8];
    else if (p === 39) delete s.fg;
    else if (p >= 40 && p <= 47) s.bg = BASE16[p - 40];
    else if (p >= 100 && p <= 107) s.bg = BASE16[p - 100 + 8];
    else if (p === 49) delete s.bg;
    else if (p === 38 || p === 48) {
      const key = p === 38 ? "fg" : "bg";
      if (params[i + 1] === 5 && i + 2 < params.length) {
        s[key] = palette256(params[i + 2] & 255);
        i += 2;
      } else if (params[i + 1] === 2 && i + 4 < params.length) {
        s[key] = `rgb(${params[i + 2]},${params[i + 3]},${params[i + 4]})`;
        i += 4;
      }
    }
  }
  return s;
}

function sameStyle(a: Style, b: Style): boolean {
  if (a === b) return true;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if ((a as Record<string, unknown>)[k] !== (b as Record<string, unknown>)[k]) return false;
  }
  return true;
}

const EMPTY: Style = Object.freeze({}) as Style;

/** A screen of rows that raw output is written to. */
export class Terminal {
  rows: { chars: string[]; styles: Style[] }[] = [];
  row = 0;
  col = 0;
  style: Style = EMPTY;
  private pending = ""; // an escape sequence cut between two writes

  constructor() {
    this.rows.push({ chars: [], styles: [] });
  }

  write(input: string): void {
    const text = this.pending + input;
    this.pending = "";
    const n = text.length;
    let i = 0;
    while (i < n) {
      const ch = text[i];
      const code = text.charCodeAt(i);
      if (ch === "\x1b") {
        const end = this.escape(text, i);
        if (end < 0) {
          this.pending = text.slice(i);
          return;
        }
        i = end;
        continue;
      }
      i++;
      if (ch === "\r") this.col = 0;
      else if (ch === "\n") this.moveTo(this.row + 1, 0);
      else if (ch === "\b") this.col = Math.max(0, this.col - 1);
      else if (ch === "\t") this.col = (Math.floor(this.col / 8) + 1) * 8;
      else if (code < 32 || code === 127) continue;
      else this.put(ch);
    }
  }

  private moveTo(row: number, col: number): void {
    this.row = Math.max(0, row);
    while (this.rows.length <= this.row) this.rows.push({ chars: [], styles: [] });
    this.col = Math.max(0, col);
  }

  private put(ch: string): void {
    const r = this.rows[this.row];
    while (r.chars.length < this.col) {
      r.chars.push(" ");
      r.styles.push(EMPTY);
    }
    r.chars[this.col] = ch;
    r.styles[this.col] = this.style;
    this.col++;
  }

  /** Interpret the escape at `start`; the index after it, or -1 if incomplete. */
  private escape(text: string, start: number): number {
    const next = text[start + 1];
    if (next === undefined) return -1;
    if (next === "[") {
      let j = start + 2;
      while (j < text.length && /[0-9;?]/.test(text[j])) j++;
      if (j >= text.length) return -1;
      const final = text[j];
      const raw = text.slice(start + 2, j);
      const params = raw === "" ? [] : raw.replace("?", "").split(";").map((x) => (x === "" ? 0 : Number(x)));
      this.csi(final, params);
      return j + 1;
    }
    if (next === "]") {
      // OSC: up to BEL or ESC \
      for (let j = start + 2; j < text.length; j++) {
        if (text[j] === "\x07") return j + 1;
        if (text[j] === "\x1b" && text[j + 1] === "\\") return j + 2;
      }
      return -1;
    }
    return start + 2;
  }

  private csi(final: string, params: number[]): void {
    const n = Math.max(1, params[0] ?? 1);
    const r = this.rows[this.row];
    switch (final) {
      case "m":
        this.style = applySGR(this.style, params);
        break;
      case "A":
        this.row = Math.max(0, this.row - n);
        break;
      case "B":
        this.moveTo(this.row + n, this.col);
        break;
      case "C":
        this.col += n;
        break;
      case "D":
        this.col = Math.max(0, this.col - n);
        break;
      case "G":
        this.col = n - 1;
        break;
      case "K": {
        const mode = params[0] ?? 0;
        if (mode === 0) {
          r.chars.length = Math.min(r.chars.length, this.col);
          r.styles.length = r.chars.length;
        } else if (mode === 1) {
          for (let c = 0; c <= this.col && c < r.chars.length; c++) r.chars[c] = " ";
        } else {
          r.chars = [];
          r.styles = [];
        }
        break;
      }
      default:
        break; // other CSI sequences (clear screen, modes) do not apply to a log
    }
  }

  /** Every row, as styled spans. */
  spans(): Span[][] {
    return this.rows.map((r) => {
      const out: Span[] = [];
      for (let c = 0; c < r.chars.length; c++) {
        const style = r.styles[c] ?? EMPTY;
        const last = out[out.length - 1];
        if (last && sameStyle(last.style, style)) last.text += r.chars[c];
        else out.push({ text: r.chars[c], style });
      }
      return out;
    });
  }

  /** Every row as plain text (trailing spaces kept). */
  lines(): string[] {
    return this.rows.map((r) => r.chars.join(""));
  }
}

/** One row's text (which may still hold \r, \b, SGR, erase) as styled spans. */
export function renderLine(text: string): Span[] {
  if (!/[\x00-\x1f\x7f]/.test(text)) return text ? [{ text, style: EMPTY }] : [];
  const term = new Terminal();
  term.write(text.replace(/\n/g, " "));
  return term.spans()[0] ?? [];
}

/** Strips every escape and control character: the text a line shows. */
export function plainText(text: string): string {
  return renderLine(text).map((s) => s.text).join("");
}

const UP = /\x1b\[(\d*)A/g;

/**
 * The rows made by the agent's (stream, line, overwrite) records, with the kernel
 * LogRing's rules: an overwrite replaces the stream's previous line (or, after a
 * cursor-up, the row the cursor is on), other lines go to the stream's next row;
 * ESC[nA moves the stream's cursor up n of its rows.
 */
export class LineRecords {
  rows = new Map<number, [string, string]>();
  private next = 0;
  private cursor = new Map<string, number>();
  private last = new Map<string, [number, string]>();

  constructor(readonly limit = 2000) {}

  add(stream: string, line: string, overwrite = false): void {
    let ups = 0;
    let text = line;
    if (line.includes("\x1b[")) {
      for (const m of line.matchAll(UP)) ups += Number(m[1] || 1);
      text = line.replace(UP, "");
    }
    let cursor = this.cursor.get(stream);
    if (cursor !== undefined && !this.rows.has(cursor)) cursor = undefined;
    let target: number | undefined;
    if (overwrite && cursor !== undefined) {
      const last = this.last.get(stream);
      target = last && last[1] === line && this.rows.has(last[0]) ? last[0] : cursor;
    } else if (cursor !== undefined) {
      target = this.below(stream, cursor);
    }
    if (target === undefined) target = this.next++;
    this.rows.set(target, [stream, text]);
    this.last.set(stream, [target, line]);
    this.cursor.set(stream, ups ? this.above(stream, target, ups) : target);
    while (this.rows.size > this.limit) this.rows.delete(this.rows.keys().next().value as number);
  }

  private below(stream: string, row: number): number | undefined {
    for (let i = row + 1; i < this.next; i++) {
      const r = this.rows.get(i);
      if (r && r[0] === stream) return i;
    }
    return undefined;
  }

  private above(stream: string, row: number, count: number): number {
    let index = row;
    const first = this.rows.keys().next().value ?? row;
    while (count && index > first) {
      index--;
      const r = this.rows.get(index);
      if (r && r[0] === stream) {
        row = index;
        count--;
      }
    }
    return row;
  }

  lines(): string[] {
    return [...this.rows.values()].map((r) => r[1]);
  }
}
