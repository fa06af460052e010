/** The last `phoenix check` of a repository from this host: kept in the state directory, shown by the dashboard and /metrics. */

import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface LastCheck {
  timeMs: number;
  ok: boolean;
  readData: boolean;
  errors: number;
}

const fileOf = (stateDir: string, repoId: string): string => join(stateDir, `last-check-${repoId}.json`);

/** Best effort: a check that cannot write its note still says its result. */
export function writeLastCheck(stateDir: string, repoId: string, c: LastCheck): void {
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const f = fileOf(stateDir, repoId);
    writeFileSync(`${f}.tmp`, `${JSON.stringify(c)}\n`, { mode: 0o600 });
    renameSync(`${f}.tmp`, f);
  } catch {
    // nothing to do: the dashboard then says no check is on record
  }
}

export function readLastCheck(stateDir: string, repoId: string): LastCheck | undefined {
  try {
    const v = JSON.parse(readFileSync(fileOf(stateDir, repoId), 'utf8')) as LastCheck;
    return typeof v.timeMs === 'number' ? v : undefined;
  } catch {
    return undefined;
  }
}
