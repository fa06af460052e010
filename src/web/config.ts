/** Where the dashboard, the WebDAV server and the metrics listen: flags over the file over the defaults. */

import type { ConfigFile } from '../config/file.js';
import { parseListen, type ListenSpec } from './http.js';

export const DEFAULT_UI = '127.0.0.1:8467';
export const DEFAULT_WEBDAV = '127.0.0.1:8468';
export const DEFAULT_RPO_TARGET_MS = 1000;

export interface WebFlags {
  uiListen?: string;
  webdavListen?: string;
  metricsListen?: string;
  uiPublic?: boolean;
}

export interface WebConfig {
  ui: ListenSpec | undefined;
  webdav: ListenSpec | undefined;
  metrics: ListenSpec | undefined;
  hosts: string[];
  rpoTargetMs: number;
}

export function webConfig(file: ConfigFile | undefined, flags: WebFlags): WebConfig {
  const allowRemote = flags.uiPublic === true || file?.ui.public === true;
  const pick = (
    flag: string | undefined,
    value: string | false | undefined,
    fallback: string | undefined,
    what: string,
  ): ListenSpec | undefined => {
    if (flag !== undefined) return parseListen(flag, what, allowRemote);
    if (value === false) return undefined;
    if (value !== undefined) return parseListen(value, what, allowRemote);
    if (fallback === undefined) return undefined;
    const spec = parseListen(fallback, what, allowRemote);
    return spec && { ...spec, fallback: true };
  };
  return {
    ui: pick(flags.uiListen, file?.ui.listen, DEFAULT_UI, flags.uiListen !== undefined ? '--ui-listen' : 'ui.listen'),
    webdav: pick(
      flags.webdavListen,
      file?.webdav.listen,
      DEFAULT_WEBDAV,
      flags.webdavListen !== undefined ? '--webdav-listen' : 'webdav.listen',
    ),
    metrics: pick(
      flags.metricsListen,
      file?.metrics.listen,
      undefined,
      flags.metricsListen !== undefined ? '--metrics-listen' : 'metrics.listen',
    ),
    hosts: file?.ui.hosts ?? [],
    rpoTargetMs: file?.ui['rpo-target'] ?? DEFAULT_RPO_TARGET_MS,
  };
}
