/**
 * Implements: the test files of the fast tier, for `npm run test:fast`. The whole suite takes most of 20 minutes
 * on two cores, nearly all of it in the files that start worker processes, NATS servers, a browser or a
 * GPU adapter; the rest (the logic, simulated actors, the in-process transport) runs in about a minute
 * and a half, which is what a developer wants between edits. A file's tier is judged from what it calls,
 * so a new test file lands in the right one without a list to keep. CI runs every file (`npm test`).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What a test file calls when it needs more than this process: processes, servers, a browser, a GPU. */
const NEEDS_MORE_THAN_THIS_PROCESS = [
  /\b(startCli|runCli|singleProcessLosses|machinePair)\(/,
  /\b(spawn|spawnSync|execFile|execFileSync|fork)\(/,
  /\b(startNatsServer|connectNats)\(/,
  /\bnew Worker\(/,
  /\bchromium\b/,
  /webgpu/i,
];

function testFiles(folder: string): string[] {
  return readdirSync(folder, { withFileTypes: true })
    .flatMap((entry) => (entry.isDirectory() ? testFiles(join(folder, entry.name)) : entry.name.endsWith('.test.ts') ? [join(folder, entry.name)] : []))
    .sort();
}

const files = testFiles('test').filter((file) => !NEEDS_MORE_THAN_THIS_PROCESS.some((pattern) => pattern.test(readFileSync(file, 'utf8'))));
process.stdout.write(`${files.join('\n')}\n`);
