/**
 * Why a pm_id must not be sent to now, as the /proc readers tell it: its process is dying or gone
 * (liveness.ts), or PM2 put a new one under it (forks.ts).
 */
export type Vacancy = { kind: 'exited'; pid: number } | { kind: 'replaced'; pid: number; newPid: number };
