/**
 * Implements: TensorBoardHook: the numbers metrics.jsonl gets, as TensorBoard scalars in
 * `DIR/tb/events.out.tfevents.<seconds>.<hostname>`: `train/loss`, `train/lr`, `train/grad_norm`,
 * `train/loss_scale` (fp16), `train/tokens_per_s`, and `val/loss`, `val/ppl` after an evaluation.
 * Every training (a resumed run, each restart of a job) writes a file of its own, which starts by
 * telling TensorBoard to drop what earlier files hold of the steps it trains again.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { EvaluationResult } from '../evaluation-plan.ts';
import { encodeEvent, FILE_VERSION, frameRecord, type ScalarValue } from '../tensorboard-events.ts';
import type { Hook, StepResult, TrainerState } from './hook.ts';

export class TensorBoardHook implements Hook {
  readonly name = 'tensorboard';
  private fd: number | undefined;
  private startStep = 0;

  /** `dir`: the folder of the events files (the run folder's `tb`). */
  constructor(private readonly dir: string) {}

  beforeTrain(state: TrainerState): void {
    // A job's restart trains again from its checkpoint: a new file, as a resumed run gets.
    this.close();
    this.startStep = state.startStep;
  }

  afterStep(state: TrainerState, result: StepResult): void {
    const scalars: ScalarValue[] = [
      { tag: 'train/loss', value: result.loss },
      { tag: 'train/lr', value: result.learningRate },
      { tag: 'train/grad_norm', value: result.gradNorm },
    ];
    if (state.config.fp16 !== undefined && result.lossScale !== undefined) scalars.push({ tag: 'train/loss_scale', value: result.lossScale });
    // Rounded as metrics.jsonl rounds it (hooks/log-by-step.ts), so the two records agree.
    const tokensPerS = state.metrics.tokens_per_s ?? result.tokens / (result.stepMs / 1000);
    scalars.push({ tag: 'train/tokens_per_s', value: Math.round(tokensPerS * 1000) / 1000 });
    this.write(result.step, scalars);
  }

  afterEvaluation(_state: TrainerState, result: EvaluationResult): void {
    this.write(result.step, [
      { tag: 'val/loss', value: result.loss },
      { tag: 'val/ppl', value: result.perplexity },
    ]);
  }

  afterTrain(): void {
    this.close();
  }

  private write(step: number, scalars: ScalarValue[]): void {
    // Opened at the first record, so a run that ends before its first step leaves no empty file.
    this.fd ??= this.open();
    // One write per record, straight to the file: a killed run keeps every record it wrote, whole.
    writeSync(this.fd, frameRecord(encodeEvent({ wallTime: Date.now() / 1000, step, scalars })));
  }

  private open(): number {
    mkdirSync(this.dir, { recursive: true });
    const wallTime = Date.now() / 1000;
    const base = join(this.dir, `events.out.tfevents.${Math.floor(wallTime)}.${hostname()}`);
    // A restart within the same second must not write into the file of the attempt before it; the
    // suffix also sorts after it, the order in which TensorBoard reads a folder's files.
    let fd: number | undefined;
    for (let n = 0; fd === undefined; n++) {
      try {
        fd = openSync(n === 0 ? base : `${base}.${n}`, 'wx');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
    }
    writeSync(fd, frameRecord(encodeEvent({ wallTime, step: 0, fileVersion: FILE_VERSION, scalars: [] })));
    // Also a fresh run's: it replaces whatever an earlier run in this folder wrote, as metrics.jsonl is rewritten.
    writeSync(fd, frameRecord(encodeEvent({ wallTime, step: this.startStep + 1, start: true, scalars: [] })));
    return fd;
  }

  private close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
