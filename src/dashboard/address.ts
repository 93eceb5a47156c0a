/**
 * Implements: `--dashboard [HOST:]PORT`, the address the live job page listens on: loopback unless a
 * host is given (the page can pause and stop the job), port 0 for any free one.
 */
export interface DashboardAddress {
  host: string;
  port: number;
}

export const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1']);

/** Undefined when the text is not [HOST:]PORT with PORT in 0..65535 (the caller says what is wrong). */
export function parseDashboardAddress(text: string): DashboardAddress | undefined {
  const match = /^(?:(\[[0-9a-fA-F:]+\]|[^:]+):)?(\d{1,5})$/.exec(text);
  if (match === null) return undefined;
  const port = Number(match[2]);
  if (port > 65_535) return undefined;
  const host = match[1] === undefined ? '127.0.0.1' : match[1].replace(/^\[(.*)\]$/, '$1');
  return { host, port };
}

export function isLoopback(host: string): boolean {
  return LOOPBACK_HOSTS.has(host) || host.startsWith('127.');
}
