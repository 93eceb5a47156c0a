/**
 * Implements: text generation from a trained model: the prompt's tokens through the cached decoder
 * once, then one token at a time (cached-decoder.ts), each chosen by the sampling options
 * (sampling.ts) with a uniform number from a stream keyed by the seed, so a seed repeats its text.
 * Generation ends after `maxNewTokens`, at <|endoftext|>, or where the model's context is full.
 */
import type { GPT } from '../model/gpt.ts';
import { combineKey, hashString, uniformAt } from '../model/rng.ts';
import { EOS_TOKEN_ID, GPT2_VOCAB_SIZE, decode, encode } from '../dataset/tokenizer.ts';
import { CachedDecoder } from './cached-decoder.ts';
import { pickToken, type SamplingOptions } from './sampling.ts';

export interface GenerateOptions extends SamplingOptions {
  prompt: string;
  maxNewTokens: number;
  seed: number;
}

export interface Generated {
  promptIds: number[];
  newIds: number[];
  /** The prompt and the new tokens, decoded. */
  text: string;
  /** Why generation ended. */
  end: 'max-new-tokens' | 'end-of-text' | 'context-full';
}

const SAMPLING_STREAM = hashString('generate');

export async function generateText(model: GPT, options: GenerateOptions, onToken?: (done: number, total: number) => void): Promise<Generated> {
  // An empty prompt starts from <|endoftext|>, as GPT-2 samples unconditionally.
  const encoded = encode(options.prompt);
  const promptIds = encoded.length === 0 ? [EOS_TOKEN_ID] : encoded;
  const decoder = new CachedDecoder(model);
  try {
    if (promptIds.length >= decoder.contextSize) {
      throw new Error(`the prompt is ${promptIds.length} tokens; the model sees at most ${decoder.contextSize} (maxPositionEmbeddings), with room for the new ones`);
    }
    const allowed = Math.min(GPT2_VOCAB_SIZE, model.config.vocabSize);
    const key = combineKey(SAMPLING_STREAM, options.seed);
    const newIds: number[] = [];
    let end: Generated['end'] = 'max-new-tokens';
    let logits = await decoder.feed(promptIds);
    for (let index = 0; index < options.maxNewTokens; index++) {
      const next = pickToken(logits, allowed, options, uniformAt(key, index));
      if (next === EOS_TOKEN_ID) {
        end = 'end-of-text';
        break;
      }
      newIds.push(next);
      onToken?.(newIds.length, options.maxNewTokens);
      if (index + 1 === options.maxNewTokens) break;
      if (decoder.length === decoder.contextSize) {
        end = 'context-full';
        break;
      }
      logits = await decoder.feed([next]);
    }
    const text = (encoded.length === 0 ? '' : options.prompt) + decode(newIds);
    return { promptIds, newIds, text, end };
  } finally {
    decoder.dispose();
  }
}
