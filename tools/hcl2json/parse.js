#!/usr/bin/env node
// Parse HCL files with HashiCorp's own parser (hashicorp/hcl, compiled to WebAssembly in
// @cdktf/hcl2json; runs offline) and print {"<path>": <parsed JSON>, ...} on stdout.
// A file that does not parse is left out of stdout; its diagnostics go to stderr, one line each,
// as "<path>: <file>:<line>,<col>-...: <summary>; <detail>", and the exit status is 1.
// Usage: node tools/hcl2json/parse.js FILE...   (exit 2: no files given or a file unreadable)
"use strict";

const fs = require("fs");
const { parse } = require("@cdktf/hcl2json");

// "parse config: [a.tf:3,7-4,1: Summary; Detail. a.tf:5,1-2: ...]" -> one string per diagnostic.
function diagnostics(path, message) {
  const text = String(message).replace(/^parse config: \[/, "").replace(/\]$/, "");
  const escaped = path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  // A new diagnostic starts at "<path>:<line>,<col>[-<line>,<col>]: "; a path inside a detail
  // ("already set at a.tf:2,3-4.") is not followed by ": ".
  const parts = text.split(new RegExp(`\\s(?=${escaped}:\\d+,\\d+(?:-\\d+(?:,\\d+)?)?: )`));
  return parts.map((part) => part.trim()).filter(Boolean);
}

async function main(paths) {
  if (paths.length === 0) {
    process.stderr.write("usage: parse.js FILE...\n");
    return 2;
  }
  const parsed = {};
  const messages = [];
  let status = 0;
  for (const path of paths) {
    let text;
    try {
      text = fs.readFileSync(path, "utf8");
    } catch (error) {
      messages.push(`${path}: cannot read: ${error.message}\n`);
      status = 2;
      continue;
    }
    try {
      parsed[path] = await parse(path, text);
    } catch (error) {
      for (const line of diagnostics(path, error.message)) {
        messages.push(`${path}: ${line.replace(/\n/g, " ")}\n`);
      }
      status = Math.max(status, 1);
    }
  }
  // Exit only once both are flushed: a pipe is written asynchronously, and exiting earlier
  // would cut the output at 64 KiB.
  await new Promise((resolve) => process.stderr.write(messages.join(""), resolve));
  await new Promise((resolve) => process.stdout.write(JSON.stringify(parsed) + "\n", resolve));
  return status;
}

main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (error) => {
    process.stderr.write(`parse.js: ${error.stack || error}\n`);
    process.exit(3);
  },
);
