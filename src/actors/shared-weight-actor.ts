/**
 * Implements: the SharedWeight actor of a rank that holds a tied parameter (the word embedding of the
 * first pipeline stage, the LM head of the last). It owns the SharedWeights reduction and its group:
 * the stage actor hands it the step's gradients at REDUCE_TIED (it starts sending at once, so the
 * transfer overlaps the compute left) and waits for it at OPTIMIZER_STEP. Its mailbox keeps the two in
 * order; the peer traffic is the reduction's own point-to-point messages.
 */
import { dispatch, spawn, stop, type ActorSystemRef, type Ref } from 'nact';
import type { SharedWeights, ReductionOptions } from '../shared-weights/shared-weights.ts';
import type { TiedReduction } from '../stages/pipeline-step.ts';
import type * as tf from '../tf.ts';
import { ActorTally, type ActorStatus } from './actor-status.ts';

type SharedWeightMessage =
  | { type: 'start'; grads: Map<string, tf.Tensor>; options?: ReductionOptions }
  | { type: 'finish'; grads: Map<string, tf.Tensor>; options?: ReductionOptions; settle: (error?: unknown) => void };

export class SharedWeightActor implements TiedReduction {
  private readonly actor: Ref<SharedWeightMessage>;
  private readonly tally: ActorTally;
  /** A start that failed: the step's 'finish' reports it (nothing waits on a start). */
  private startError: unknown;

  constructor(
    system: ActorSystemRef,
    rank: number,
    private readonly sharedWeights: SharedWeights,
  ) {
    this.tally = new ActorTally('shared-weight', rank, 'idle');
    this.actor = spawn(
      system,
      async (state: null, message: SharedWeightMessage) => {
        const step = message.options?.step === undefined ? '' : ` of step ${message.options.step + 1}`;
        if (message.type === 'start') {
          this.tally.state = 'reducing';
          try {
            this.sharedWeights.startReduction(message.grads, message.options);
          } catch (error) {
            this.startError = error;
          }
          this.tally.done(`start${step}`);
          return state;
        }
        this.tally.state = 'reducing';
        try {
          if (this.startError !== undefined) throw this.startError;
          await this.sharedWeights.reduceGradients(message.grads, message.options);
          message.settle();
        } catch (error) {
          message.settle(error);
        } finally {
          this.startError = undefined;
        }
        this.tally.state = 'idle';
        this.tally.done(`reduce${step}`);
        return state;
      },
      `shared-weight-${rank}`,
      { initialState: null },
    );
  }

  get parameterNames(): string[] {
    return this.sharedWeights.parameterNames;
  }

  startReduction(grads: Map<string, tf.Tensor>, options?: ReductionOptions): void {
    this.tally.queued();
    dispatch(this.actor, { type: 'start', grads, options });
  }

  reduceGradients(grads: Map<string, tf.Tensor>, options?: ReductionOptions): Promise<void> {
    this.tally.queued();
    return new Promise((resolve, reject) => dispatch(this.actor, { type: 'finish', grads, options, settle: (error) => (error === undefined ? resolve() : reject(error)) }));
  }

  status(): ActorStatus {
    return this.tally.status();
  }

  stop(): void {
    stop(this.actor);
  }
}
