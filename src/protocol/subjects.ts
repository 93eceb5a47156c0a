/** Implements: the job-relative subjects of the runtime, in one table (the bus prefixes `gh.<jobId>.`). */
export const SUBJECTS = {
  register: 'coord.register',
  heartbeat: 'coord.heartbeat',
  gate: 'coord.gate',
  stepDone: 'coord.step',
  evaluationDone: 'coord.evaluation',
  fatal: 'coord.fatal',
  control: 'coord.control',
  checkpointSaved: 'coord.checkpoint',
  connectionInterrupted: 'coord.interrupted',
  shutdown: 'job.shutdown',
  /** `.<node>`: node 0's restart orders to the launcher of that node. */
  restart: 'launcher.restart',
} as const;
