/**
 * Implements: the layout of the help text: the general help listing every command, one command's
 * help (usage, description, options, more sections, examples), and the sections train and plan add
 * (--set overrides, the config keys from the schema) wrapped to the help's width.
 */
import { describeDefault, listKeys, TRAIN_SCHEMA } from '../config/schema.ts';
import { HELP_OPTION, PROGRAM, type CommandSpec } from './command-spec.ts';

export const OVERRIDES_HELP = `Overrides (--set KEY=VALUE):
  KEY is a dotted path into the config (model.numLayers, parallel.tensor.size). VALUE is read as
  JSON when it is JSON (8, 1e-3, true, null, [..], {..}), otherwise as text (cpu, data/a.jsonl);
  quote it to force text: --set 'seed="7"'. Setting an object replaces it; null unsets a key, so
  its default applies again. --steps and --backend are applied after every --set.
  A relative data.path written in the config file is relative to the file's folder; one given
  with --set is relative to the current directory.`;

export function configKeysHelp(): string {
  const keys = listKeys(TRAIN_SCHEMA);
  const width = Math.max(...keys.map((k) => k.path.length)) + 2;
  const lines = keys.flatMap(({ path, spec }) => {
    const choices = spec.kind === 'enum' ? `${spec.values.join(' | ')}: ` : '';
    const fallback = describeDefault(path);
    const text = `${choices}${spec.doc}${fallback === undefined ? '' : ` [${fallback}]`}`;
    return wrap(text, HELP_WIDTH - 2 - width).map((line, i) => `  ${(i === 0 ? path : '').padEnd(width)}${line}`);
  });
  return [
    'Config keys (JSON; all optional except data.path; [default]; model defaults are GPT-2 small\'s,',
    'a model.preset replaces them and explicit model keys win over the preset):',
    ...lines,
  ].join('\n');
}

const HELP_WIDTH = 100;

/** Splits text at spaces into lines of at most `width` characters (a longer word gets its own line). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  lines.push(line);
  return lines;
}

/** The general help: every command of `commands` with its summary, then each one's first example. */
export function formatGeneralHelp(commands: Readonly<Record<string, CommandSpec>>): string {
  const width = Math.max(...Object.keys(commands).map((name) => name.length)) + 2;
  return [
    `${PROGRAM}: train GPT models with data x pipeline x tensor parallelism on TensorFlow.js.`,
    '',
    'Usage:',
    `  ${PROGRAM} <command> [options]`,
    `  ${PROGRAM} <command> --help     options, config keys and examples of one command`,
    `  ${PROGRAM} --version`,
    '',
    'Commands:',
    ...Object.entries(commands).map(([name, spec]) => `  ${name.padEnd(width)}${spec.summary}`),
    '',
    'Examples:',
    ...Object.values(commands).map((spec) => `  ${spec.examples[0]}`),
    `  ${PROGRAM} train --help`,
  ].join('\n');
}

/** One command's help: usage, description, options (with --help), more help, examples. */
export function formatCommandHelp(name: string, spec: CommandSpec): string {
  const options = { ...spec.options, help: HELP_OPTION };
  const labels = Object.entries(options).map(([long, option]) => {
    const short = option.short === undefined ? '    ' : `-${option.short}, `;
    return `${short}--${long}${option.placeholder === undefined ? '' : ` ${option.placeholder}`}`;
  });
  const width = Math.max(...labels.map((label) => label.length)) + 2;
  const optionLines = Object.values(options).flatMap((option, i) =>
    option.doc.split('\n').map((docLine, j) => `  ${(j === 0 ? labels[i]! : '').padEnd(width)}${docLine}`),
  );
  return [
    `usage: ${PROGRAM} ${name} ${spec.usage}`,
    '',
    spec.description,
    '',
    'Options:',
    ...optionLines,
    ...(spec.moreHelp === undefined ? [] : ['', spec.moreHelp()]),
    '',
    'Examples:',
    ...spec.examples.map((example) => `  ${example}`),
  ].join('\n');
}
