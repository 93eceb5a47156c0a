/**
 * Implements: the dynamic loss scaler of mixed-precision training (the seed's
 * `fp16=dict(mode=AMP_TYPE.NAIVE)`), with Megatron's DynamicGradScaler rules: an overflowing step is
 * skipped and, after `hysteresis` overflowing steps, the scale halves; after `growthInterval` clean steps
 * in a row it doubles (and the hysteresis budget is restored). Every rank must feed it the same
 * decision (the overflow flag is MAX-reduced over the job) so all ranks skip the same steps.
 */

export interface LossScalerSettings {
  initialScale: number;
  growthInterval: number;
  hysteresis: number;
  growthFactor?: number;
  backoffFactor?: number;
  minScale?: number;
}

export class DynamicLossScaler {
  scale: number;
  private growthTracker = 0;
  private hysteresisTracker: number;
  private readonly growthFactor: number;
  private readonly backoffFactor: number;
  private readonly minScale: number;

  constructor(private readonly settings: LossScalerSettings) {
    this.scale = settings.initialScale;
    this.hysteresisTracker = settings.hysteresis;
    this.growthFactor = settings.growthFactor ?? 2;
    this.backoffFactor = settings.backoffFactor ?? 0.5;
    this.minScale = settings.minScale ?? 1;
  }

  /** Records one step's outcome; returns whether its update must be skipped. */
  update(overflow: boolean): { skip: boolean } {
    if (overflow) {
      this.growthTracker = 0;
      this.hysteresisTracker -= 1;
      if (this.hysteresisTracker <= 0) this.scale = Math.max(this.scale * this.backoffFactor, this.minScale);
      return { skip: true };
    }
    this.growthTracker += 1;
    if (this.growthTracker === this.settings.growthInterval) {
      this.growthTracker = 0;
      this.hysteresisTracker = this.settings.hysteresis;
      this.scale *= this.growthFactor;
    }
    return { skip: false };
  }
}
