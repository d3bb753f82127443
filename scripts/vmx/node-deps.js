#!/usr/bin/env node
// Prints, one per line, the package directories (relative to the project root) that
// the named packages need at run time: themselves plus their `dependencies`,
// recursively, resolved the way Node resolves them (nearest node_modules upwards).
// scripts/vmx-e2e.sh copies exactly these into the emulated host's disk, so the disk
// carries mocha/chai/bindings and what they load, not the whole dev toolchain.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');

/** Directory of package `name` as seen from package directory `from`, or null. */
function resolvePackage(name, from) {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (dir === root || dir === path.dirname(dir)) return null;
  }
}

const wanted = process.argv.slice(2);
if (wanted.length === 0) {
  console.error('usage: node-deps.js PACKAGE...');
  process.exit(2);
}
const seen = new Set();
const queue = wanted.map((name) => ({ name, from: root, optional: false }));
while (queue.length > 0) {
  const { name, from, optional } = queue.shift();
  const dir = resolvePackage(name, from);
  if (dir === null) {
    if (optional) continue;
    console.error(`node-deps: cannot find package "${name}" (needed from ${path.relative(root, from) || '.'}); run npm ci first`);
    process.exit(1);
  }
  if (seen.has(dir)) continue;
  seen.add(dir);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  for (const dep of Object.keys(pkg.dependencies ?? {})) queue.push({ name: dep, from: dir, optional: false });
  for (const dep of Object.keys(pkg.optionalDependencies ?? {})) queue.push({ name: dep, from: dir, optional: true });
}
for (const dir of [...seen].sort()) console.log(path.relative(root, dir));
