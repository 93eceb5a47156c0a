/**
 * Implements: what the live job page shows, gathered in node 0's launcher as the job runs: the step
 * metrics (a hook beside metrics.jsonl's), validation losses, the launcher's log tail and the latest
 * steps' timeline from the ranks' trace events (trace-parts.ts hands them over as it copies them). The
 * ranks' states come from the coordinator when the page asks (server.ts), not from here.
 */
import type { EvaluationResult } from '../train/evaluation-plan.ts';
import type { Hook, StepResult, TrainerState } from '../train/hooks/hook.ts';
import type { TraceEvent } from '../trace/trace.ts';

export interface StepPoint {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerS: number;
  stepMs: number;
}

export interface ValidationPoint {
  step: number;
  loss: number;
}

/** One slice of the timeline as the page draws it: milliseconds from the window's first slice. */
export interface TimelineSlice {
  rank: number;
  name: string;
  /** compute | comm (collectives and pipeline messages) */
  cat: string;
  /** forward, backward, backward input, backward weight for compute; else the slice's name. */
  kind: string;
  step: number;
  startMs: number;
  durMs: number;
}

const LOG_LINES = 200;
/** The timeline holds the slices of this many latest steps. */
const TIMELINE_STEPS = 2;

export class JobView {
  readonly steps: StepPoint[] = [];
  readonly validation: ValidationPoint[] = [];
  private readonly logLines: string[] = [];
  /** X slices of recent steps, µs timestamps as recorded. */
  private slices: TraceEvent[] = [];

  /** Feeds the step and validation points (a hook of the job's reporter, after the metrics file's). */
  readonly hook: Hook = {
    name: 'live job page',
    afterStep: (_state: TrainerState, result: StepResult) => {
      this.steps.push({
        step: result.step,
        loss: result.loss,
        lr: result.learningRate,
        gradNorm: result.gradNorm,
        tokensPerS: result.stepMs > 0 ? result.tokens / (result.stepMs / 1000) : 0,
        stepMs: result.stepMs,
      });
    },
    afterEvaluation: (_state: TrainerState, result: EvaluationResult) => {
      this.validation.push({ step: result.step, loss: result.loss });
    },
  };

  log(line: string): void {
    this.logLines.push(`${new Date().toISOString()} ${line}`);
    if (this.logLines.length > LOG_LINES) this.logLines.splice(0, this.logLines.length - LOG_LINES);
  }

  get logTail(): readonly string[] {
    return this.logLines;
  }

  /** New trace events from the ranks: keeps the timed slices of the latest steps. */
  traceEvents(events: readonly TraceEvent[]): void {
    for (const event of events) {
      if (event.ph === 'X' && typeof event.args?.step === 'number') this.slices.push(event);
    }
    const latest = Math.max(...this.slices.map((e) => e.args!.step as number));
    this.slices = this.slices.filter((e) => (e.args!.step as number) > latest - TIMELINE_STEPS);
  }

  get timeline(): TimelineSlice[] {
    if (this.slices.length === 0) return [];
    const origin = Math.min(...this.slices.map((e) => e.ts));
    return this.slices.map((e) => ({
      rank: e.pid,
      name: e.name,
      cat: e.cat,
      kind: typeof e.args?.op === 'string' ? e.args.op : e.name,
      step: e.args!.step as number,
      startMs: (e.ts - origin) / 1000,
      durMs: (e.dur ?? 0) / 1000,
    }));
  }
}
