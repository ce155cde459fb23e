/**
 * The status rows (`pm2 trigger pm2-scoped-intercom status`): one per app the table or the outbox
 * knows, as JSON for programs and as a fixed-width table for people.
 */
import type { Outbox } from '../deliver/outbox';
import type { HoldBuffer } from '../hold/hold-buffer';
import type { Election } from '../table/election';
import { DEFAULT_INSTANCE_VAR, splitAppKey, type AppInfo, type ProcessInfo, type Registry } from '../table/registry';
import type { Writers } from '../table/writer-table';
import type { Reporter } from './reporter';

export interface AppStatus {
  namespace: string;
  name: string;
  instances: number;
  online: number;
  instance_var: string;
  writer_pm_id: number | null;
  writer_instance: number | null;
  writer_ready: boolean;
  held: number;
  in_flight: number;
  forwarded: number;
  dropped: number;
  last_problem: string | null;
}

/** What the outbox counts for one app. */
export interface AppDelivery {
  held: number;
  inflight: number;
  forwarded: number;
  dropped: number;
}

export function statusRow(
  appKey: string,
  app: AppInfo | undefined,
  procs: readonly ProcessInfo[],
  e: Election,
  delivery: AppDelivery,
  lastProblem: string | undefined,
): AppStatus {
  const w = e.writer ?? e.claimants[0];
  const { namespace, name } = splitAppKey(appKey);
  return {
    namespace,
    name,
    instances: procs.length,
    online: procs.filter((p) => p.status === 'online').length,
    instance_var: app?.instanceVar ?? DEFAULT_INSTANCE_VAR,
    writer_pm_id: w ? w.pmId : null,
    writer_instance: w?.instance ?? null,
    writer_ready: e.writer !== undefined,
    held: delivery.held,
    in_flight: delivery.inflight,
    forwarded: delivery.forwarded,
    dropped: delivery.dropped,
    last_problem: lastProblem ?? null,
  };
}

export function byApp(a: AppStatus, b: AppStatus): number {
  return a.namespace + a.name < b.namespace + b.name ? -1 : 1;
}

/** A fixed-width table of the status rows, for people (the action's reply is JSON for programs). */
export function formatStatusTable(rows: AppStatus[]): string {
  const head = ['namespace', 'name', 'inst', 'online', 'writer', 'held', 'inflight', 'forwarded', 'dropped', 'last problem'];
  const body = rows.map((r) => [
    r.namespace,
    r.name,
    String(r.instances),
    String(r.online),
    r.writer_pm_id === null ? '-' : `${r.writer_pm_id}#${r.writer_instance}${r.writer_ready ? '' : ' (not ready)'}`,
    String(r.held),
    String(r.in_flight),
    String(r.forwarded),
    String(r.dropped),
    r.last_problem ? r.last_problem.slice(0, 80) : '-',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  return [head, ...body].map((cols) => cols.map((col, i) => col.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

/** A row per app the table or the outbox knows (module-only apps left out), sorted by name. */
export function statusRows(registry: Registry, writers: Writers, hold: HoldBuffer, outbox: Outbox, reporter: Pick<Reporter, 'lastProblem'>): AppStatus[] {
  const rows: AppStatus[] = [];
  const keys = new Set<string>([...[...registry.apps()].map((a) => a.key), ...hold.appKeys()]);
  for (const key of keys) {
    const app = registry.app(key);
    const procs = app ? registry.processesOf(app) : [];
    if (procs.length > 0 && procs.every((p) => p.isModule)) continue;
    const e = writers.elect(key) ?? { claimants: [] };
    const delivery = outbox.stats(key) ?? { held: hold.held(key), inflight: 0, forwarded: 0, dropped: 0 };
    rows.push(statusRow(key, app, procs, e, delivery, reporter.lastProblem(key)));
  }
  return rows.sort(byApp);
}

/** Apps with processes (modules aside) and no ready writer now. */
export function appsWithoutWriter(registry: Registry, writers: Pick<Writers, 'writerOf'>): number {
  let n = 0;
  for (const a of registry.apps()) {
    if (writers.writerOf(a.key) === undefined && registry.processesOf(a).some((p) => !p.isModule)) n++;
  }
  return n;
}
