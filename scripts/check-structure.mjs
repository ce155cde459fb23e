#!/usr/bin/env node
// The layout's rules, checked on every `npm test` (docs/architecture.md):
//   - no import cycle among the module's own files (type-only imports count: a cycle of types
//     is how a shared type ends up in the busiest unit);
//   - no function longer than 70 lines, no class longer than 250;
//   - at most 10 files in a folder of lib/.
// Parsed with the TypeScript parser that vitest already brings (rolldown's oxc), so no new dependency.
import fs from 'node:fs';
import path from 'node:path';
import { parseSync } from 'rolldown/utils';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const MAX_FUNCTION = 70;
const MAX_CLASS = 250;
const MAX_FILES = 10;

function sources(dir) {
  const out = [];
  for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(rel));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

const files = ['app.ts', ...sources('lib'), ...sources('client')];
const problems = [];

function resolve(from, spec) {
  const base = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
  return [base, `${base}.ts`, `${base}/index.ts`].find((f) => files.includes(f));
}

function lineOf(text, offset) {
  let n = 1;
  for (let i = 0; i < offset; i++) if (text.charCodeAt(i) === 10) n++;
  return n;
}

const graph = new Map();
for (const file of files) {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const { program, errors } = parseSync(file, text, { lang: 'ts', sourceType: 'module' });
  if (errors.length > 0) problems.push(`${file}: does not parse: ${errors[0].message}`);
  const deps = new Set();
  const visit = (node, owner) => {
    if (!node || typeof node.type !== 'string') return;
    if ((node.type === 'ImportDeclaration' || node.type === 'ExportNamedDeclaration' || node.type === 'ExportAllDeclaration') && node.source?.value?.startsWith('.')) {
      const to = resolve(file, node.source.value);
      if (to) deps.add(to);
    }
    let name = owner;
    const isFn = /Function(Declaration|Expression)$|^ArrowFunctionExpression$/.test(node.type);
    const isClass = node.type === 'ClassDeclaration' || node.type === 'ClassExpression';
    if (isFn || isClass) {
      const lines = lineOf(text, node.end) - lineOf(text, node.start) + 1;
      name = node.id?.name ?? owner ?? '(anonymous)';
      const max = isClass ? MAX_CLASS : MAX_FUNCTION;
      if (lines > max) problems.push(`${file}:${lineOf(text, node.start)}: ${isClass ? 'class' : 'function'} ${name} has ${lines} lines (at most ${max})`);
    }
    for (const [key, value] of Object.entries(node)) {
      if (key === 'parent') continue;
      const childOwner = node.type === 'MethodDefinition' || node.type === 'Property' || node.type === 'VariableDeclarator' ? (node.key?.name ?? node.id?.name ?? name) : name;
      if (Array.isArray(value)) for (const v of value) visit(v, childOwner);
      else if (value && typeof value === 'object') visit(value, childOwner);
    }
  };
  visit(program, undefined);
  graph.set(file, deps);
}

// Cycles: depth-first search, each cycle reported once from its smallest file name.
const seen = new Set();
function walk(start, at, trail) {
  for (const next of graph.get(at) ?? []) {
    if (next === start) {
      const cycle = [...trail, start];
      const key = [...trail].sort().join(' ');
      if (!seen.has(key)) {
        seen.add(key);
        problems.push(`import cycle: ${cycle.join(' -> ')}`);
      }
    } else if (!trail.includes(next) && next > start) walk(start, next, [...trail, next]);
  }
}
for (const f of files) walk(f, f, [f]);

const perFolder = new Map();
for (const f of files.filter((f) => f.startsWith('lib/'))) perFolder.set(path.posix.dirname(f), (perFolder.get(path.posix.dirname(f)) ?? 0) + 1);
for (const [dir, n] of perFolder) if (n > MAX_FILES) problems.push(`${dir}/ holds ${n} source files (at most ${MAX_FILES})`);

if (problems.length > 0) {
  console.error(`check-structure: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`check-structure: ${files.length} files, no import cycle, no function over ${MAX_FUNCTION} lines, no class over ${MAX_CLASS}, no folder over ${MAX_FILES} files`);
