// `npm test`: bundles each test/*.test.ts with esbuild (Vite's own bundler) and runs them
// with Node's test runner. The modules under test are pure (no DOM).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

let build;
try {
  ({ build } = await import("esbuild"));
} catch {
  console.log("skipped: esbuild is not installed (npm install --no-save in webui/, or scripts/build.sh)");
  process.exit(77);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const tests = readdirSync(here).filter((name) => name.endsWith(".test.ts"));
const out = mkdtempSync(path.join(os.tmpdir(), "bulkhead-webui-test-"));
try {
  await build({
    entryPoints: tests.map((name) => path.join(here, name)),
    outdir: out,
    bundle: true,
    platform: "node",
    format: "esm",
    outExtension: { ".js": ".mjs" },
    logLevel: "warning",
  });
  const files = readdirSync(out).map((name) => path.join(out, name));
  const result = spawnSync(process.execPath, ["--test", ...files], { stdio: "inherit" });
  process.exitCode = result.status ?? 1;
} finally {
  rmSync(out, { recursive: true, force: true });
}
