/**
 * Implements: `gpt-hybrid plan`: resolve a config (a file, or a model preset with default settings),
 * plan every rank without allocating the model, print the plan as a table or as JSON.
 */
import { ConfigError } from '../config/errors.ts';
import { loadConfig } from '../config/load.ts';
import { applyOverrides } from '../config/overrides.ts';
import { resolveConfig } from '../config/resolve.ts';
import { TRAIN_DEFAULTS } from '../config/schema.ts';
import type { TrainConfig } from '../config/types.ts';
import { formatPlan } from '../planner/format.ts';
import { planTraining, type TrainingPlan } from '../planner/plan.ts';
import type { PlanCommand } from './plan-args.ts';

export interface PlanConfig {
  config: TrainConfig;
  /** Settings the planner chose because the user left them open, said in the output. */
  notes: string[];
}

type JsonObject = Record<string, unknown>;

function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isAbsent(value: unknown): boolean {
  return value === undefined || value === null;
}

/** The world size the launch flags describe, for `parallel.data: "auto"`. */
function worldSize(command: PlanCommand): number | undefined {
  return command.nprocPerNode === undefined ? undefined : command.nprocPerNode * command.nnodes;
}

/** The config to plan: the file with --model and --set applied, or the preset alone (see presetInput). */
export function resolvePlanConfig(command: PlanCommand, cwd = process.cwd()): PlanConfig {
  if (command.configPath !== undefined) {
    const sets = command.model === undefined ? command.sets : [`model.preset=${command.model}`, ...command.sets];
    const world = worldSize(command);
    const config = loadConfig(command.configPath, sets, { cwd, checkDataFile: false, ...(world === undefined ? {} : { worldSize: world }) });
    return { config, notes: [] };
  }
  if (command.model === undefined) throw new Error('plan needs a config file or --model PRESET');
  const notes: string[] = [];
  const input = presetInput(command, notes);
  return { config: resolveConfig(input, { configDir: cwd, checkDataFile: false }), notes };
}

/**
 * `{ model: { preset }, data: { path } }` with the --set items applied, and the settings the config
 * checks need that the defaults do not satisfy for a pipeline (one micro-batch by default, while 1F1B
 * needs at least one per stage) filled in when the user left them open:
 * - numMicroBatches: the pipeline size (a multiple of it, as the interleaved schedule wants), or with
 *   batchSize given, the smallest divisor of batchSize that is at least that;
 * - batchSize: the smallest multiple of numMicroBatches not below the default batch size.
 */
function presetInput(command: PlanCommand, notes: string[]): JsonObject {
  // The data file is never read: the planner needs the model and the layout only.
  const merged = applyOverrides({ model: { preset: command.model }, data: { path: 'unused' } }, command.sets) as JsonObject;
  const parallel = isPlainObject(merged.parallel) ? merged.parallel : {};
  const tensor = isPlainObject(parallel.tensor) ? parallel.tensor : {};
  const pipeline = typeof parallel.pipeline === 'number' ? parallel.pipeline : 1;
  const numChunks = typeof merged.numChunks === 'number' ? merged.numChunks : 1;

  if (parallel.data === 'auto') {
    const world = worldSize(command);
    const tp = typeof tensor.size === 'number' ? tensor.size : 1;
    if (world === undefined) {
      throw new ConfigError([{ path: 'parallel.data', message: '"auto" needs the world size: pass --nproc-per-node N (and --nnodes N), or --set parallel.data=N' }]);
    }
    if (world % (pipeline * tp) !== 0) {
      throw new ConfigError([{ path: 'parallel.data', message: `"auto": the world of ${world} ranks does not divide by pipeline x tensor.size = ${pipeline} x ${tp}` }]);
    }
    merged.parallel = { ...parallel, data: world / (pipeline * tp) };
  }

  if (pipeline > 1 && Number.isInteger(pipeline) && isAbsent(merged.numMicroBatches)) {
    const step = numChunks > 1 ? pipeline : 1;
    const batch = merged.batchSize;
    let chosen = pipeline;
    if (typeof batch === 'number' && Number.isInteger(batch) && batch > 0) {
      for (let m = pipeline; m <= batch; m += step) {
        if (batch % m === 0) {
          chosen = m;
          break;
        }
      }
    }
    merged.numMicroBatches = chosen;
    notes.push(`numMicroBatches = ${chosen} (chosen for pipeline ${pipeline}: 1F1B needs at least one micro-batch per stage; --set numMicroBatches=N to change)`);
  }
  const microBatches = merged.numMicroBatches;
  if (isAbsent(merged.batchSize) && typeof microBatches === 'number' && Number.isInteger(microBatches) && microBatches > 0) {
    const fallback = TRAIN_DEFAULTS.batchSize;
    const batchSize = Math.ceil(fallback / microBatches) * microBatches;
    if (batchSize !== fallback) {
      merged.batchSize = batchSize;
      notes.push(`batchSize = ${batchSize} (the smallest multiple of numMicroBatches ${microBatches} from the default ${fallback}; --set batchSize=N to change)`);
    }
  }
  return merged;
}

/** The JSON document `plan --json` prints. */
export function planJson(plan: TrainingPlan, notes: readonly string[]): object {
  return {
    totalParams: plan.totalParams,
    tableParams: plan.tableParams,
    layout: plan.layout,
    grid: plan.grid,
    schedule: plan.schedule,
    numMicroBatches: plan.numMicroBatches,
    microBatchSize: plan.microBatchSize,
    numChunks: plan.numChunks,
    seqLen: plan.seqLen,
    notes,
    ranks: plan.ranks.map((r) => ({
      rank: r.rank,
      dp: r.dp,
      pp: r.pp,
      tp: r.tp,
      layers: r.layers,
      params: r.params,
      tiedCopyParams: r.tiedCopyParams,
      replicatedParams: r.replicatedParams,
      microBatchesInFlight: r.microBatchesInFlight,
      bytes: r.bytes,
      totalBytes: r.totalBytes,
    })),
  };
}

export async function runPlan(command: PlanCommand): Promise<number> {
  const { config, notes } = resolvePlanConfig(command);
  const plan = planTraining(config);
  const text = command.json ? JSON.stringify(planJson(plan, notes), null, 2) : formatPlan(plan, config.model, notes);
  process.stdout.write(`${text}\n`);
  return 0;
}
