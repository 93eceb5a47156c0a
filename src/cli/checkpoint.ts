/**
 * Implements: `gpt-hybrid checkpoint convert` (a checkpoint rewritten in another layout, src/checkpoint/convert.ts)
 * and `gpt-hybrid checkpoint inspect` (a checkpoint checked file by file and summarized, src/checkpoint/inspect.ts),
 * `export` and `import` (Hugging Face GPT-2 folders, src/checkpoint/hf-gpt2-files.ts). No tfjs: all work on the files alone.
 */
import { convertCheckpoint, inspectCheckpoint, type CheckpointLayout, type CheckpointManifest, type CheckpointReport } from '../checkpoint/index.ts';
import { exportHfGpt2, importHfGpt2 } from '../checkpoint/hf-gpt2-files.ts';
import type { CheckpointCommand } from './checkpoint-args.ts';

export async function runCheckpoint(command: CheckpointCommand): Promise<number> {
  const print = (line: string) => process.stdout.write(`${line}\n`);
  if (command.action === 'inspect') {
    const report = await inspectCheckpoint(command.source);
    print(command.json ? JSON.stringify(reportJson(report), null, 2) : formatReport(report));
    return report.problems.length === 0 ? 0 : 1;
  }
  if (command.action === 'export') {
    const exported = await exportHfGpt2(command.source, command.out);
    print(`exported ${exported.sourceDir} (after step ${exported.step}) as a Hugging Face GPT-2 folder: ${command.out}/model.safetensors (${exported.tensors} float32 tensors) and config.json`);
    print(`load it with transformers: GPT2LMHeadModel.from_pretrained(${JSON.stringify(command.out)})`);
    if (exported.model.activation === 'gelu') print('note: this model uses the exact GELU (activation_function "gelu"); read with GPT-2\'s gelu_new its outputs differ slightly');
    return 0;
  }
  if (command.action === 'import') {
    const imported = await importHfGpt2(command.source, command.out);
    const m = imported.model;
    print(`imported ${command.source}: ${m.numLayers} layers, hidden ${m.hiddenSize}, ${m.numAttentionHeads} heads, vocab ${m.vocabSize}, context ${m.maxPositionEmbeddings}${imported.skipped.length > 0 ? ` (skipped ${imported.skipped.length} buffers and tied copies)` : ''}`);
    print(`wrote ${imported.dir} (step 0, no optimizer state)`);
    print(`fine-tune it with: gpt-hybrid train <config.json with this model> --resume ${command.out} [--set parallel....]`);
    return 0;
  }
  const result = await convertCheckpoint(command.source, command.out, command.layout);
  const { layout } = result.manifest;
  const bytes = result.manifest.ranks.reduce((n, r) => n + r.bytes, 0);
  print(`converted ${result.sourceDir} (step ${result.source.step}, ${describeLayout(result.source.layout)}) to ${describeLayout(layout)}${result.numChunks > 1 ? `, ${result.numChunks} chunks per stage` : ''}`);
  print(`wrote ${result.dir}: ${layout.world} rank file${layout.world === 1 ? '' : 's'}, ${megabytes(bytes)}, checksums in its manifest`);
  const note = globalBatchNote(result.source, layout);
  if (note !== undefined) print(note);
  const sets = [`parallel.data=${layout.data}`, `parallel.pipeline=${layout.pipeline}`, `parallel.tensor.size=${layout.tensor}`];
  if (result.numChunks > 1) sets.push(`numChunks=${result.numChunks}`);
  print(`resume it with: gpt-hybrid train <config.json> --resume ${command.out} ${sets.map((s) => `--set ${s}`).join(' ')}`);
  return 0;
}

function describeLayout(layout: CheckpointLayout): string {
  return `data ${layout.data} x pipeline ${layout.pipeline} x tensor ${layout.tensor}`;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * The global batch is batchSize x data x gradientAccumulation; a new data size changes it unless batchSize
 * changes too, and with it every later step's samples. Says what keeps it, when the source config tells.
 */
function globalBatchNote(source: CheckpointManifest, layout: CheckpointLayout): string | undefined {
  if (layout.data === source.layout.data) return undefined;
  const config = source.config as { batchSize?: unknown } | null;
  const batchSize = typeof config?.batchSize === 'number' ? config.batchSize : undefined;
  if (batchSize === undefined) return undefined;
  const perReplicaTimesData = batchSize * source.layout.data;
  const keep = perReplicaTimesData % layout.data === 0 ? `resume with --set batchSize=${perReplicaTimesData / layout.data} to keep it` : `no whole batchSize keeps it (${perReplicaTimesData} / ${layout.data})`;
  return `note: parallel.data goes from ${source.layout.data} to ${layout.data}, and the global batch is batchSize x data x gradientAccumulation; ${keep}, so later steps see the same samples`;
}

function reportJson(report: CheckpointReport): object {
  const { manifest } = report;
  return {
    ok: report.problems.length === 0,
    dir: report.dir,
    step: manifest.step,
    layout: manifest.layout,
    seed: manifest.seed,
    dataLoader: manifest.dataLoader,
    createdAt: manifest.createdAt,
    parameters: report.parameters,
    moments: report.moments,
    files: report.files,
    problems: report.problems,
  };
}

function formatReport(report: CheckpointReport): string {
  const { manifest } = report;
  const model = (manifest.config as { model?: Record<string, unknown> } | null)?.model;
  const lines = [
    `checkpoint  ${report.dir}`,
    `step        ${manifest.step} (data loader: epoch ${manifest.dataLoader.epoch}, step ${manifest.dataLoader.stepInEpoch} of it; seed ${manifest.seed})`,
    `layout      ${describeLayout(manifest.layout)} = ${manifest.layout.world} rank${manifest.layout.world === 1 ? '' : 's'} (order ${manifest.layout.order})`,
  ];
  if (model !== undefined) {
    lines.push(`model       ${model.numLayers} layers, hidden ${model.hiddenSize}, ${model.numAttentionHeads} heads, vocabulary ${model.vocabSize}`);
  }
  lines.push(
    `parameters  ${report.parameters.elements.toLocaleString('en-US')} in ${report.parameters.tensors} tensors${report.moments ? ', with Adam moments' : ', no Adam moments (before the first step)'}`,
    `created     ${manifest.createdAt}`,
    'files',
  );
  const width = Math.max(...report.files.map((f) => f.file.length));
  for (const file of report.files) {
    lines.push(`  ${file.file.padEnd(width)}  ${megabytes(file.bytes).padStart(9)}  ${String(file.tensors).padStart(4)} tensors  sha256 ${file.sha256.slice(0, 16)}  ${file.problem === undefined ? 'ok' : 'REFUSED'}`);
  }
  if (report.problems.length === 0) {
    const bytes = report.files.reduce((n, f) => n + f.bytes, 0);
    lines.push(`checksums   OK: ${report.files.length} file${report.files.length === 1 ? '' : 's'}, ${megabytes(bytes)}; every tensor fully covered`);
  } else {
    lines.push(`REFUSED: ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}`, ...report.problems.map((p) => `  ${p}`));
  }
  return lines.join('\n');
}
