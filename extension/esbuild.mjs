// Bundles the extension (dist/extension.js, `vscode` left external) or, with
// --tests, the unit tests (dist/test/*.test.js, run by `node --test dist/test/`).
// --production minifies for the .vsix; --watch rebuilds on change.
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const args = new Set(process.argv.slice(2));
const production = args.has("--production");

const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  logLevel: "warning",
  absWorkingDir: root,
};

const options = args.has("--tests")
  ? {
      ...common,
      entryPoints: readdirSync(join(root, "extension/test/unit"))
        .filter((name) => name.endsWith(".test.ts"))
        .map((name) => join("extension/test/unit", name)),
      outdir: "dist/test",
      sourcemap: "inline",
      external: ["vscode"],
    }
  : {
      ...common,
      entryPoints: ["extension/src/extension.ts"],
      outfile: "dist/extension.js",
      external: ["vscode"],
      minify: production,
      sourcemap: !production,
      metafile: false,
    };

if (args.has("--watch")) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
