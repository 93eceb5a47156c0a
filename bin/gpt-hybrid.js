#!/usr/bin/env node
// The CLI entry: registers the TypeScript loader, then runs the CLI from source (no build step).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
const code = await main(process.argv.slice(2));
// A process holding a Dawn GPU instance does not end by itself while the instance lives (the webgpu
// package's README, "Lifetime"): a command that ran on webgpu ends here once it is done.
if (globalThis.navigator?.gpu !== undefined) process.exit(code);
process.exitCode = code;
