/**
 * Which environment variable holds each app's instance number (its `instance_var`), remembered
 * across PM2's restarts and the module's own: after `pm2 restart`/`reload`, PM2 7 says
 * `NODE_APP_INSTANCE` again while the number stays under the app's own key (DESIGN).
 */
import { toNumber } from '../shared/system';

export const DEFAULT_INSTANCE_VAR = 'NODE_APP_INSTANCE';

export class InstanceVars {
  readonly #known: Map<string, string>;
  readonly #global: string | undefined;

  /** `known`: per app key, from an earlier run; `global`: the daemon's PM2_PROCESS_INSTANCE_VAR. */
  constructor(known: Record<string, string> = {}, global?: string) {
    this.#known = new Map(Object.entries(known));
    this.#global = global;
  }

  /** The variable to read the app's instance number from, as this pm2_env says it. */
  of(appKey: string, env: Record<string, unknown>): string {
    if (this.#global) return this.#global;
    const declared = typeof env.instance_var === 'string' && env.instance_var !== '' ? env.instance_var : DEFAULT_INSTANCE_VAR;
    const remembered = this.#known.get(appKey);
    if (declared !== DEFAULT_INSTANCE_VAR) {
      if (remembered !== declared) this.#known.set(appKey, declared);
      return declared;
    }
    if (remembered && toNumber(env[remembered]) !== undefined) return remembered;
    return DEFAULT_INSTANCE_VAR;
  }

  /** Per app key, to persist across the module's own restarts. */
  toJSON(): Record<string, string> {
    return Object.fromEntries(this.#known);
  }
}
