// Bundle the panel into the Python package: skyward_jupyter/skyward/static/panel.{js,css}
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const out = fileURLToPath(new URL("../skyward_jupyter/skyward/static/", import.meta.url));
await build({
  entryPoints: { panel: "src/index.ts" },
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: !process.argv.includes("--dev"),
  sourcemap: false,
  outdir: out,
  logLevel: "warning",
});
console.log(`[skyward] panel bundle written to ${out}`);
