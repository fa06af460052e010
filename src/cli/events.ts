import { PhoenixError } from '../errors.js';
import type { Change } from '../model/change.js';
import { Watcher } from '../watcher/watcher.js';
import { changeToJson, changeToText } from './format.js';
import { printError } from './output.js';

export interface EventsOptions {
  json?: boolean;
  exclude?: string[];
  oneFileSystem?: boolean;
}

/** `phoenix events SOURCE`: prints the normalized change stream until SIGINT or SIGTERM. */
export async function eventsCommand(source: string, opts: EventsOptions): Promise<number> {
  const out = process.stdout;
  const print = opts.json
    ? (o: Record<string, unknown>) => out.write(`${JSON.stringify(o)}\n`)
    : (o: Record<string, unknown>) => out.write(`${String(o.text)}\n`);
  const emit = (c: Change): void => {
    print(opts.json ? changeToJson(c) : { text: changeToText(c) });
  };
  return await new Promise<number>((resolve) => {
    let watcher: Watcher | undefined;
    const stop = (code: number): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      watcher?.close();
      // Let stdout drain before the caller exits.
      out.write('', () => resolve(code));
    };
    const onSignal = (): void => stop(0);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      watcher = new Watcher(source, {
        exclude: opts.exclude ?? [],
        oneFileSystem: opts.oneFileSystem ?? false,
        onChange: emit,
        onWarning: (w) => printError(w, 'warning'),
        onFatal: (err) => {
          printError(err);
          stop(1);
        },
      });
    } catch (err) {
      printError(err);
      stop(1);
      return;
    }
    const w = watcher;
    w.start().then(
      () => {
        if (w.state === 'failed') return;
        print(opts.json ? { event: 'ready', path: '.', kind: 'dir' } : { text: `ready      dir     . (${w.stats().watches} watches)` });
      },
      (err: unknown) => {
        printError(err instanceof PhoenixError ? err : new PhoenixError('PHX_IO', String(err)));
        stop(1);
      },
    );
  });
}
