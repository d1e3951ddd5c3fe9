// Rewrites the optimizer table of README.md from the registry (between its markers).
// Usage: npm run readme:optimizers

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { optimizersTable, TABLE_BEGIN, TABLE_END } from '../src/optim/readme-table.ts';

const path = join(import.meta.dirname, '..', 'README.md');
const text = readFileSync(path, 'utf8');
const begin = text.indexOf(TABLE_BEGIN);
const end = text.indexOf(TABLE_END);
if (begin < 0 || end < begin) throw new Error(`README.md has no ${TABLE_BEGIN} … ${TABLE_END} block`);
writeFileSync(path, text.slice(0, begin) + optimizersTable() + text.slice(end + TABLE_END.length));
console.log('wrote the optimizer table of README.md');
