/**
 * Implements: the names of the compute backends this project runs on, in order of preference
 * (fastest first; select.ts tries them in this order when none is asked for).
 *
 * Why one list: the config schema and its types, the CLI's --backend and backend selection all name
 * these; each reads this list, so a backend added here is accepted, documented and tried everywhere.
 * It imports nothing, so config and CLI code can name backends without loading tfjs.
 */
export const BACKEND_NAMES = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;

export type BackendName = (typeof BACKEND_NAMES)[number];
