import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { applySGR, LineRecords, palette256, plainText, renderLine, Terminal } from "../src/logengine";

// Captured from real tqdm 4.70 runs (every write of a file object, mininterval=0), and the
// (stream, line, overwrite) records the agent's LineSink makes of them.
const fixturePath = (name: string) => join(dirname(fileURLToPath(import.meta.url)), "fixtures", name);
const writes: Record<string, string[]> = JSON.parse(
  readFileSync(fixturePath("tqdm-writes.json"), "utf8"),
);
const records: Record<string, [string, string, boolean][]> = JSON.parse(
  readFileSync(fixturePath("tqdm-records.json"), "utf8"),
);

function screen(chunks: string[]): string[] {
  const t = new Terminal();
  for (const c of chunks) t.write(c);
  return t.lines().map((l) => l.trimEnd());
}

function fromRecords(rs: [string, string, boolean][]): string[] {
  const r = new LineRecords();
  for (const [stream, line, overwrite] of rs) r.add(stream, line, overwrite);
  return r.lines().map((l) => plainText(l).trimEnd());
}

describe("Terminal on raw output", () => {
  it("carriage return rewrites the line", () => {
    expect(screen(["abc\rX"])).toEqual(["Xbc"]);
    expect(screen(["step 1", "\rstep 2", "\rstep 3\n", "done"])).toEqual(["step 3", "done"]);
  });

  it("backspace moves back one column", () => {
    expect(screen(["abc\b\bXY"])).toEqual(["aXY"]);
    expect(screen(["\b\bx"])).toEqual(["x"]);
  });

  it("cursor up returns to an earlier row", () => {
    expect(screen(["one\ntwo\x1b[A\rONE\n"])).toEqual(["ONE", "two"]);
    expect(screen(["a\nb\nc\x1b[2A\rA"])).toEqual(["A", "b", "c"]);
  });

  it("erase in line", () => {
    expect(screen(["hello world\r\x1b[Khi"])).toEqual(["hi"]);
    expect(screen(["hello\x1b[2D\x1b[K!"])).toEqual(["hel!"]);
  });

  it("keeps an escape cut between two writes", () => {
    expect(screen(["a\x1b[", "31mb\x1b", "[0mc"])).toEqual(["abc"]);
    const t = new Terminal();
    t.write("a\x1b[3");
    t.write("1mb");
    expect(t.spans()[0]).toEqual([
      { text: "a", style: {} },
      { text: "b", style: { fg: "#cd3131" } },
    ]);
  });

  it("a single tqdm bar ends as one line at 100%", () => {
    const lines = screen(writes.single).filter(Boolean);
    expect(lines).toEqual(["100%|##################################################| 5/5"]);
  });

  it("nested tqdm bars (position=1, ESC[A) leave the outer bar at 100% and no inner bar", () => {
    const lines = screen(writes.nested);
    expect(lines[0]).toBe("outer: 100%|#################################| 3/3");
    expect(lines.slice(1).every((l) => l === "")).toBe(true);
  });

  it("nested tqdm bars, midway: two rows, one per bar", () => {
    // after the inner bar's second update of the first outer step
    const upto = writes.nested.indexOf("\rinner:  50%|################5                | 1/2") + 2;
    expect(screen(writes.nested.slice(0, upto))).toEqual([
      "outer:   0%|                                 | 0/3",
      "inner:  50%|################5                | 1/2",
    ]);
  });

  it("tqdm colour='green' keeps its SGR colours", () => {
    const t = new Terminal();
    for (const c of writes.colour) t.write(c);
    const row = t.spans()[0];
    expect(row.map((s) => s.text).join("")).toBe("100%|########################################| 3/3");
    expect(row.find((s) => s.text.startsWith("####"))?.style.fg).toBe("#0dbc79");
    expect(row[0].style).toEqual({});
  });
});

describe("LineRecords (the agent's lines, as the kernel's LogRing applies them)", () => {
  for (const name of ["single", "nested", "colour"]) {
    it(`${name}: the same screen as the raw bytes`, () => {
      const raw = screen(writes[name]).map((l) => plainText(l));
      const rows = fromRecords(records[name]);
      // the raw screen has one more (empty) row where the final "\n" left the cursor
      expect(rows).toEqual(raw.filter((l, i) => i < rows.length));
      expect(rows.length).toBeLessThanOrEqual(2);
    });
  }

  it("overwrite replaces the previous line of the same stream only", () => {
    const r = new LineRecords();
    r.add("stdout", "a");
    r.add("stderr", "bar 1");
    r.add("stdout", "b");
    r.add("stderr", "bar 2", true);
    r.add("stdout", "c", true);
    expect(r.lines()).toEqual(["a", "bar 2", "c"]);
  });

  it("stays bounded", () => {
    const r = new LineRecords(100);
    for (let i = 0; i < 1000; i++) r.add("stdout", `line ${i}`);
    expect(r.rows.size).toBe(100);
    expect(r.lines()[0]).toBe("line 900");
  });
});

describe("SGR and line rendering", () => {
  it("basic, bright, 256 and true colours", () => {
    expect(applySGR({}, [1, 31])).toEqual({ bold: true, fg: "#cd3131" });
    expect(applySGR({ bold: true }, [0])).toEqual({});
    expect(applySGR({}, [92, 44])).toEqual({ fg: "#23d18b", bg: "#2472c8" });
    expect(applySGR({}, [38, 5, 196])).toEqual({ fg: palette256(196) });
    expect(applySGR({}, [48, 2, 1, 2, 3])).toEqual({ bg: "rgb(1,2,3)" });
    expect(applySGR({ fg: "x", underline: true }, [39, 24])).toEqual({});
  });

  it("renders a row into spans", () => {
    expect(renderLine("\x1b[32mgreen\x1b[0m and \x1b[1;31mbold red\x1b[0m")).toEqual([
      { text: "green", style: { fg: "#0dbc79" } },
      { text: " and ", style: {} },
      { text: "bold red", style: { bold: true, fg: "#cd3131" } },
    ]);
    expect(renderLine("plain")).toEqual([{ text: "plain", style: {} }]);
    expect(renderLine("")).toEqual([]);
    expect(plainText("50%\r100%")).toBe("100%");
  });

  it("drops other escapes (OSC titles, modes)", () => {
    expect(plainText("\x1b]0;title\x07ok\x1b[?25l")).toBe("ok");
  });
});
