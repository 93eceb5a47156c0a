/**
 * Implements: loadConfig, the whole road from a config file and `--set` items to a validated TrainConfig.
 * Paths follow where they were written: a relative data.path in the file is relative to the file's
 * folder (so a config works from any current directory), one given with --set is relative to the
 * current directory (where the user typed it).
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { ConfigError, type ConfigProblem } from './errors.ts';
import { locateJsonError } from './json-position.ts';
import { applyOverrides, parseOverrides, type Override } from './overrides.ts';
import { resolveConfig } from './resolve.ts';
import type { TrainConfig } from './types.ts';

export interface LoadOptions {
  /** Where --set paths and a relative config path are resolved; default process.cwd(). */
  cwd?: string;
  /** Report a data.path that is not an existing file (default true). */
  checkDataFile?: boolean;
  /** The launch's world size (nnodes x nproc-per-node), when known: what `parallel.data: "auto"` divides. */
  worldSize?: number;
}

/**
 * `parallel.data: "auto"` (torchrun users' habit: the number of workers decides the data-parallel size)
 * becomes world / (pipeline x tensor.size) before validation.
 */
function resolveAutoDataParallel(input: object, worldSize: number | undefined): object {
  const parallel = (input as { parallel?: Record<string, unknown> }).parallel;
  if (parallel === undefined || parallel === null || typeof parallel !== 'object' || parallel.data !== 'auto') return input;
  const pipeline = typeof parallel.pipeline === 'number' ? parallel.pipeline : 1;
  const tensorSize = (parallel.tensor as { size?: unknown } | undefined)?.size;
  const tensor = typeof tensorSize === 'number' ? tensorSize : 1;
  if (worldSize === undefined) {
    throw new ConfigError([{ path: 'parallel.data', message: '"auto" needs the world size: pass --nproc-per-node N (and --nnodes N on several nodes)' }]);
  }
  if (worldSize % (pipeline * tensor) !== 0) {
    throw new ConfigError([
      { path: 'parallel.data', message: `"auto": the world of ${worldSize} ranks does not divide by pipeline x tensor.size = ${pipeline} x ${tensor}` },
    ]);
  }
  return { ...input, parallel: { ...parallel, data: worldSize / (pipeline * tensor) } };
}

/** Reads and parses a JSON config file; a syntax error names the file, line and column, and shows the line. */
export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder, not a file' : String(error);
    throw new ConfigError([{ path: '', message: `cannot read the config file: ${reason}` }], { source: file, cause: error });
  }
  // Editors on Windows may save a byte-order mark, which JSON.parse refuses.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ConfigError([{ path: '', message: describeSyntaxError(text, error as Error) }], { source: file, cause: error });
  }
}

function describeSyntaxError(text: string, error: Error): string {
  const located = locateJsonError(text);
  if (located === undefined) return `not valid JSON: ${error.message}`;
  const lineText = text.split('\n')[located.line - 1]!.replace(/\r$/, '');
  const caret = `${' '.repeat(Math.max(0, located.column - 1))}^`;
  return [
    `not valid JSON at line ${located.line}, column ${located.column}: expected ${located.expected}`,
    `    ${lineText}`,
    `    ${caret}`,
  ].join('\n');
}

/** A data.path given with --set, made absolute against `cwd`; other overrides unchanged. */
function anchorDataPath(override: Override, cwd: string): Override {
  const anchor = (path: unknown) => (typeof path === 'string' && path !== '' && !isAbsolute(path) ? resolvePath(cwd, path) : path);
  const key = override.path.join('.');
  if (key === 'data.path') return { ...override, value: anchor(override.value) };
  const value = override.value;
  if (key === 'data' && typeof value === 'object' && value !== null && 'path' in value) {
    return { ...override, value: { ...value, path: anchor(value.path) } };
  }
  return override;
}

/** Appends "(from --set …)" to problems about keys that an override set, so the user knows where to look. */
function blameOverrides(problems: readonly ConfigProblem[], overrides: readonly Override[]): ConfigProblem[] {
  return problems.map((problem) => {
    const culprit = [...overrides].reverse().find((o) => problem.path === o.key || problem.path.startsWith(`${o.key}.`));
    return culprit === undefined ? problem : { ...problem, message: `${problem.message} (from --set ${culprit.item})` };
  });
}

/**
 * Reads `file`, applies `sets` (`key=value`, in order) and resolves the result (see resolveConfig).
 * Throws ConfigError naming the file and listing every problem.
 */
export function loadConfig(file: string, sets: readonly string[] = [], options: LoadOptions = {}): TrainConfig {
  const cwd = options.cwd ?? process.cwd();
  const source = resolvePath(cwd, file);
  const overrides = parseOverrides(sets).map((o) => anchorDataPath(o, cwd));
  const parsed = readConfigFile(source);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const got = Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed);
    throw new ConfigError([{ path: '', message: `expected a JSON object at the top level, got ${got}` }], { source });
  }
  try {
    const merged = resolveAutoDataParallel(applyOverrides(parsed, overrides), options.worldSize);
    const resolveOptions = { configDir: dirname(source), ...(options.checkDataFile === undefined ? {} : { checkDataFile: options.checkDataFile }) };
    return resolveConfig(merged, resolveOptions);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new ConfigError(blameOverrides(error.problems, overrides), { source, cause: error });
  }
}
