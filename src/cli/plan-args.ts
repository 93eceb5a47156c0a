/**
 * Implements: the `plan` command line: its options and help, and `PlanCommand`. plan.ts runs it.
 * Apart from plan.ts so that parsing and help load none of the command's dependencies (train's
 * include tfjs): args.ts imports every command's spec, main.ts loads plan.ts only to run it.
 */
import { closestMatch } from '../config/suggest.ts';
import { MODEL_PRESETS } from '../model/config.ts';
import { checkOverrides, positiveInteger, PROGRAM, UsageError, type CommandSpec, type ParsedValues } from './command-spec.ts';
import { OVERRIDES_HELP } from './help.ts';

export interface PlanCommand {
  command: 'plan';
  /** Absent: plan `model` with default settings. */
  configPath?: string;
  /** A model preset: replaces the config's model.preset, or alone, is what gets planned. */
  model?: string;
  sets: string[];
  json: boolean;
  /** For `parallel.data: "auto"`: the world is nnodes x nprocPerNode. */
  nnodes: number;
  nprocPerNode?: number;
}

export const PLAN_SPEC: CommandSpec<PlanCommand> = {
  summary: 'show each rank\'s layers, parameters and memory, without building the model',
  usage: '[config.json] [--model PRESET] [--set KEY=VALUE ...] [--json]',
  description:
    'Plans a training job: for every rank of the data x pipeline x tensor grid, its coordinates, layer\n' +
    'ranges, parameter share and bytes (weights, gradients, Adam state, activations), plus the whole\n' +
    "model's parameter count by Megatron's formula. Nothing is allocated, so GPT-3 plans in a blink.\n" +
    'With --model alone, plans that preset with default settings (choosing numMicroBatches and\n' +
    'batchSize a pipeline needs when not set, and saying so). The data file is not read.',
  options: {
    model: { type: 'string', placeholder: 'PRESET', doc: `model preset: ${Object.keys(MODEL_PRESETS).join(' | ')}` },
    set: { type: 'string', multiple: true, placeholder: 'KEY=VALUE', doc: 'override a config key; repeat it for several, applied in order' },
    json: { type: 'boolean', doc: 'print the plan as JSON' },
    nnodes: { type: 'string', placeholder: 'N', doc: 'nodes, for parallel.data "auto" [1]' },
    'nproc-per-node': { type: 'string', placeholder: 'N', doc: 'processes per node, for parallel.data "auto"' },
  },
  moreHelp: () => OVERRIDES_HELP,
  examples: [
    `${PROGRAM} plan --model gpt3 --set parallel.pipeline=8 --set parallel.tensor.size=8`,
    `${PROGRAM} plan tiny.json --set parallel.pipeline=2 --set numMicroBatches=4 --json`,
  ],
  build: buildPlan,
};

function buildPlan(values: ParsedValues, positionals: string[], usage: string): PlanCommand {
  const [configPath, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}; plan takes at most one config file`, usage);
  const model = values.model as string | undefined;
  if (configPath === undefined && model === undefined) throw new UsageError('plan needs a config file or --model PRESET', usage);
  if (model !== undefined && !Object.hasOwn(MODEL_PRESETS, model)) {
    const guess = closestMatch(model, Object.keys(MODEL_PRESETS));
    throw new UsageError(`unknown model preset "${model}"; ${guess === undefined ? `choose one of ${Object.keys(MODEL_PRESETS).join(', ')}` : `did you mean "${guess}"?`}`, usage);
  }
  const command: PlanCommand = {
    command: 'plan',
    sets: (values.set as string[] | undefined) ?? [],
    json: values.json === true,
    nnodes: positiveInteger(values.nnodes as string | undefined, '--nnodes', usage) ?? 1,
  };
  if (configPath !== undefined) command.configPath = configPath;
  if (model !== undefined) command.model = model;
  const nproc = positiveInteger(values['nproc-per-node'] as string | undefined, '--nproc-per-node', usage);
  if (nproc !== undefined) command.nprocPerNode = nproc;
  checkOverrides(command.sets, usage);
  return command;
}
