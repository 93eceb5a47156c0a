/**
 * Implements: `--set dotted.key=value` overrides applied on top of a config object (nanoGPT's
 * configurator, without executing anything). The value is JSON when it parses as JSON (numbers,
 * booleans, null, arrays, objects), else the raw text; so `backend=cpu` and `data.path=a.jsonl` need
 * no quotes, and `seed="7"` forces a string. Setting an object replaces the key; it does not merge.
 * `null` unsets a key so that its default applies again (e.g. `epochs=null` before `steps=100`).
 * Whether a key exists or a value has the right type is validation's business (resolve.ts).
 */
import { ConfigError, type ConfigProblem } from './errors.ts';

export interface Override {
  /** The dotted key as written: `model.numLayers`. */
  key: string;
  path: readonly string[];
  value: unknown;
  /** The item as given on the command line, for error messages. */
  item: string;
}

const EXAMPLE = 'write key=value, e.g. --set model.numLayers=8';

/** Parses one `key=value`, or returns what is wrong with it. */
function tryParseOverride(item: string): Override | ConfigProblem {
  const equals = item.indexOf('=');
  if (equals < 0) return { path: '--set', message: `${JSON.stringify(item)} has no "=": ${EXAMPLE}` };
  const key = item.slice(0, equals);
  if (key === '') return { path: '--set', message: `${JSON.stringify(item)} has an empty key: ${EXAMPLE}` };
  const path = key.split('.');
  if (path.some((part) => part === '')) {
    return { path: '--set', message: `${JSON.stringify(item)}: key ${JSON.stringify(key)} has an empty part between dots` };
  }
  // Assigning `__proto__` would change an object's prototype rather than add a key.
  if (path.includes('__proto__')) return { path: '--set', message: `${JSON.stringify(item)}: "__proto__" is not a config key` };
  return { key, path, value: parseValue(item.slice(equals + 1)), item };
}

function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Parses every item, reporting all malformed ones in one ConfigError. */
export function parseOverrides(items: readonly string[]): Override[] {
  const parsed = items.map(tryParseOverride);
  const problems = parsed.filter((p): p is ConfigProblem => !('item' in p));
  if (problems.length > 0) throw new ConfigError(problems);
  return parsed as Override[];
}

export function parseOverride(item: string): Override {
  return parseOverrides([item])[0]!;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A copy of `input` with the overrides applied in order (a later one wins); `input` is not changed.
 * Missing intermediate objects are created; an intermediate that holds a non-object is an error.
 */
export function applyOverrides(input: object, sets: readonly (string | Override)[]): object {
  if (!isPlainObject(input)) {
    throw new ConfigError([{ path: '', message: `expected a JSON object to apply --set to, got ${Array.isArray(input) ? 'an array' : typeof input}` }]);
  }
  // Strings are parsed together first so that every malformed item is reported at once.
  const parsedStrings = parseOverrides(sets.filter((set): set is string => typeof set === 'string'));
  let nextParsed = 0;
  const ordered = sets.map((set) => (typeof set === 'string' ? parsedStrings[nextParsed++]! : set));

  const result = structuredClone(input) as Record<string, unknown>;
  const problems: ConfigProblem[] = [];
  for (const override of ordered) {
    let target = result;
    let blocked = false;
    for (let depth = 0; depth < override.path.length - 1; depth++) {
      const part = override.path[depth]!;
      const next = Object.hasOwn(target, part) ? target[part] : undefined;
      if (next === undefined || next === null) {
        target[part] = {};
      } else if (!isPlainObject(next)) {
        const prefix = override.path.slice(0, depth + 1).join('.');
        problems.push({
          path: override.key,
          message: `cannot set it: ${prefix} is ${JSON.stringify(next)}, not an object (from --set ${override.item})`,
        });
        blocked = true;
        break;
      }
      target = target[part] as Record<string, unknown>;
    }
    if (!blocked) target[override.path[override.path.length - 1]!] = structuredClone(override.value);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return result;
}
