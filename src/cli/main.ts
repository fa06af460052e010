import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { asPhoenixError, errnoCode } from '../errors.js';
import { OVERWRITE_MODES } from '../restore/plan.js';
import { printError, type Verbosity } from './output.js';

const ENVIRONMENT = `
Environment:
  PHOENIX_REPOSITORY      the repository (as --repo)
  PHOENIX_PASSWORD_FILE   a file holding the password (as --password-file)
  PHOENIX_PASSWORD        the password itself
  PHOENIX_CONFIG          the configuration file (default: ~/.config/phoenix/phoenix.yaml, when it exists)
  PHOENIX_LOG_LEVEL       phoenix watch's log level
  PHOENIX_DEBUG=1         print the stack trace of an internal error
  XDG_DATA_HOME, XDG_STATE_HOME, XDG_CONFIG_HOME   where the default repository, state and configuration live
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3   for s3:// repositories

With no repository named, every command uses the one phoenix watch creates:
~/.local/share/phoenix/repository, with the password generated into ~/.config/phoenix/password.
TIME is ISO 8601 (2026-11-23T10:15:30Z, 2026-11-23, "2026-11-23 10:15" local) or a time ago (30s, 10m, 2h, 3d, 1w).
Exit codes: 0 success, 1 failure, 2 usage error.`;

const EXAMPLES = `
Examples:
  phoenix watch ~/Documents                     back ~/Documents up continuously
  phoenix status                                what the daemon is doing
  phoenix log                                   the commits
  phoenix ls --at 2h docs/                      the tree as it was two hours ago
  phoenix versions notes/todo.txt               every version of a file, across renames
  phoenix diff 1d now                           what changed since yesterday
  phoenix restore --at 10m --target /tmp/r docs/
  phoenix dump --at 1h notes/todo.txt > todo.txt
  phoenix forget --dry-run                      which instants the retention policy keeps
  phoenix prune                                 delete what no kept instant needs`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Exit codes: 0 success, 1 failure, 2 usage error. */
export async function main(argv: string[]): Promise<number> {
  // A closed stdout (`phoenix ls | head`) ends the command quietly, like other Unix tools.
  process.stdout.on('error', (err) => {
    if (errnoCode(err) === 'EPIPE') process.exit(0);
  });
  let result: Promise<number> = Promise.resolve(0);
  const run = (p: Promise<number | void>): void => {
    result = p.then((code) => code ?? 0);
  };
  const program = new Command('phoenix')
    .description('Real-time backup for Linux: every change, versioned, deduplicated and encrypted.')
    .version(version(), '-V, --version', 'print the version')
    .option('-v, --verbose', 'say more (repeat for even more)', (_v: string, n: number) => n + 1, 0)
    .option('-q, --quiet', 'print only errors and warnings')
    .addHelpText('after', `${EXAMPLES}\n${ENVIRONMENT}`)
    .showHelpAfterError('(phoenix --help lists the commands; phoenix help COMMAND explains one)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  // --sftp-key reaches the SFTP backend the way PHOENIX_SFTP_KEY does.
  program.hook('preAction', (_p, action) => {
    const key = action.opts<{ sftpKey?: string }>().sftpKey;
    if (key !== undefined) process.env.PHOENIX_SFTP_KEY = key;
  });
  const verbosity = (c: Command): Verbosity => {
    const g = c.optsWithGlobals<{ verbose: number; quiet?: boolean }>();
    return { verbosity: g.quiet ? 0 : 1 + g.verbose };
  };

  program
    .command('version')
    .description('print the version')
    .action(() => void process.stdout.write(`phoenix ${version()}\n`));

  program
    .command('events')
    .description('print the changes Phoenix sees under SOURCE as they happen (like inotifywait -m -r)')
    .argument('<SOURCE>', 'directory to watch')
    .option('--json', 'one JSON object per line')
    .addOption(excludeOption())
    .option('--one-file-system', 'do not cross file system boundaries')
    .action(async (source: string, _o: unknown, c: Command) => {
      const m = await import('./events.js');
      run(m.eventsCommand(source, c.opts<{ json?: boolean; exclude: string[]; oneFileSystem?: boolean }>()));
    });

  limitOptions(settingsOptions(program.command('watch')))
    .description('back SOURCE up continuously: every change durable in the repository within a fraction of a second')
    .argument('[SOURCE]', 'directory to watch (or the sources: of the configuration)')
    .option('--source <NAME>', "the source's name in the repository (default: its absolute path)")
    .addOption(excludeOption())
    .option('--one-file-system', 'do not cross file system boundaries')
    .option(
      '--ui-listen <ADDR>',
      'where the dashboard and /metrics listen: HOST:PORT, 127.0.0.1:0 for a free port, or off (default: ui.listen, or 127.0.0.1:8467)',
    )
    .option(
      '--webdav-listen <ADDR>',
      'where the read-only WebDAV server of the past listens, or off (default: webdav.listen, or 127.0.0.1:8468)',
    )
    .option('--metrics-listen <ADDR>', 'also serve /metrics without a token here (default: metrics.listen, or nowhere)')
    .option('--ui-public', 'allow listening beyond loopback (anyone reaching it with the token reads every backed-up file)')
    .addOption(
      new Option(
        '--log-level <LEVEL>',
        'log level (default: $PHOENIX_LOG_LEVEL, log-level: in the configuration, or info; -v debug, -q warn)',
      ).choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
    )
    .addHelpText(
      'after',
      '\nExample:\n  phoenix watch ~/Documents --exclude "*.tmp"\n  phoenix watch --config ~/.config/phoenix/phoenix.yaml',
    )
    .action((source: string | undefined, _o: unknown, c: Command) => {
      const o = c.opts<import('../daemon/config.js').WatchFlags>();
      const v = verbosity(c).verbosity;
      if (o.logLevel === undefined && v !== 1) o.logLevel = v === 0 ? 'warn' : v === 2 ? 'debug' : 'trace';
      // The daemon's modules (pino, zod, yaml) load only for the commands that need them.
      run(import('./watch.js').then((m) => m.watchCommand(source, o)));
    });
  program
    .command('ui')
    .description("print a one-time login link to the running daemon's dashboard, and open it in a browser")
    .option('--state <DIR>', 'the state directory the daemon uses (default: $XDG_STATE_HOME/phoenix)')
    .option('--config <FILE>', 'read the state directory from this configuration')
    .option('--no-open', 'only print the link')
    .action((_o: unknown, c: Command) => run(import('./ui-commands.js').then((m) => m.uiCommand(c.opts()))));
  settingsOptions(program.command('serve'))
    .description('serve the dashboard (browse, history, restore) and WebDAV from a repository, with no daemon running')
    .option('--ui-listen <ADDR>', 'where the dashboard listens (default: ui.listen, or 127.0.0.1:8467), or off')
    .option('--webdav-listen <ADDR>', 'where WebDAV listens (default: webdav.listen, or 127.0.0.1:8468), or off')
    .option('--ui-public', 'allow listening beyond loopback')
    .option('--open', 'open the login link in a browser')
    .addHelpText('after', '\nExample:\n  phoenix serve --repo s3://bucket/phoenix --ui-listen 127.0.0.1:0')
    .action((_o: unknown, c: Command) => run(import('./ui-commands.js').then((m) => m.serveCommand(c.opts()))));
  program
    .command('status')
    .description('what the running phoenix watch is doing: state, pending changes, last commit, errors')
    .option('--state <DIR>', 'the state directory the daemon uses (default: $XDG_STATE_HOME/phoenix)')
    .option('--config <FILE>', 'read the state directory from this configuration')
    .option('--json', 'print JSON')
    .action((_o: unknown, c: Command) => run(import('./watch.js').then((m) => m.statusCommand(c.opts()))));

  const repoCmd = (name: string, description: string): Command =>
    settingsOptions(program.command(name)).description(description).option('--json', 'print JSON (one object per line)');
  const withSource = (c: Command): Command => c.option('--source <NAME>', 'which source of the repository (needed when it holds several)');
  const atOption = (c: Command): Command =>
    c.option('--at <TIME>', 'ISO 8601, or a time ago: 30s, 10m, 2h, 3d (default: the latest commit)');
  const base64Option = (c: Command): Command =>
    c.option('--path-base64 <B64>', "the path as base64 bytes (a name that is not UTF-8: --json's pathBase64)");
  const repo = (): Promise<typeof import('./repo-commands.js')> => import('./repo-commands.js');
  const browse = (): Promise<typeof import('./browse.js')> => import('./browse.js');

  repoCmd('init', 'create a new repository (encrypted unless --insecure-no-encryption)')
    .option('--insecure-no-encryption', 'store everything in the clear (no password)')
    .addHelpText(
      'after',
      '\nExample:\n  phoenix init --repo /mnt/backup/phoenix\n  phoenix init --repo "s3://bucket/phoenix?endpoint=https://s3.example.com"',
    )
    .action((_o: unknown, c: Command) => run(repo().then((m) => m.initCommand(c.opts()))));
  limitOptions(withSource(repoCmd('backup', 'back SOURCE up now: upload what changed since the last commit, as one commit')))
    .argument('<SOURCE>', 'directory to back up')
    .addOption(excludeOption())
    .option('--one-file-system', 'do not cross file system boundaries')
    .option('-n, --dry-run', 'list what would be committed; read and write nothing')
    .addHelpText('after', '\nExample:\n  phoenix backup ~/Documents --exclude "*.tmp"\n  phoenix backup --dry-run ~/Documents')
    .action((source: string, _o: unknown, c: Command) =>
      run(
        repo().then((m) =>
          m.backupCommand(source, { ...c.opts<Omit<import('./repo-commands.js').BackupFlags, 'verbosity'>>(), ...verbosity(c) }),
        ),
      ),
    );
  withSource(repoCmd('log', 'list the commits (of every source, or of --source): seq, time, counts, bytes')).action(
    (_o: unknown, c: Command) => run(repo().then((m) => m.logCommand(c.opts()))),
  );
  repoCmd('sources', 'list the sources in the repository: name, path, host, last commit, size').action((_o: unknown, c: Command) =>
    run(repo().then((m) => m.sourcesCommand(c.opts()))),
  );
  withSource(repoCmd('stats', 'sizes, file counts and deduplication, per source and for the repository')).action(
    (_o: unknown, c: Command) => run(repo().then((m) => m.statsCommand(c.opts()))),
  );
  base64Option(atOption(withSource(repoCmd('ls', 'list the tree of a source (below PATH) as it was at TIME'))))
    .argument('[PATH]', 'only below this path')
    .addHelpText('after', '\nExample:\n  phoenix ls --at "2026-11-23 10:00" docs/')
    .action((path: string | undefined, _o: unknown, c: Command) => run(browse().then((m) => m.lsCommand(path, c.opts()))));
  base64Option(withSource(repoCmd('versions', 'every version of PATH, across renames: time, size, deletions and moves')))
    .argument('[PATH]', 'path inside the source')
    .action((path: string | undefined, _o: unknown, c: Command) => run(browse().then((m) => m.versionsCommand(path, c.opts()))));
  withSource(repoCmd('find', 'where and when entries matching PATTERN existed (a glob: *.pdf matches names, docs/**/*.pdf paths)'))
    .argument('<PATTERN>', 'glob')
    .option('--from <TIME>', 'from this instant on (default: the first commit)')
    .option('--to <TIME>', 'up to this instant (default: now)')
    .addHelpText('after', '\nExample:\n  phoenix find "*.docx" --from 1w')
    .action((pattern: string, _o: unknown, c: Command) => run(browse().then((m) => m.findCommand(pattern, c.opts()))));
  base64Option(withSource(repoCmd('diff', 'what changed between two instants: added (+), removed (-), modified (M), moved (>)')))
    .argument('<T1>', 'the earlier instant (TIME)')
    .argument('<T2>', 'the later instant (TIME, or now)')
    .argument('[PATH]', 'only below this path')
    .addHelpText('after', '\nExample:\n  phoenix diff 2d 1d docs/')
    .action((t1: string, t2: string, path: string | undefined, _o: unknown, c: Command) =>
      run(browse().then((m) => m.diffCommand(t1, t2 === 'now' ? new Date().toISOString() : t2, path, c.opts()))),
    );
  limitOptions(withSource(atOption(repoCmd('restore', 'restore a source (or PATHs of it) into DIR as it was at TIME'))))
    .argument('[PATH...]', 'only these paths')
    .requiredOption('--target <DIR>', 'where to write (created if missing)')
    .addOption(
      new Option(
        '--overwrite <MODE>',
        'where the target already has something different: replace it always, if-changed, if-newer (the backup is newer), or never',
      ).choices(OVERWRITE_MODES),
    )
    .option('--delete', 'remove what the target has below the restored paths and the backup does not')
    .option('-n, --dry-run', 'list what would be written, replaced, kept and deleted; change nothing')
    .addOption(
      new Option('--include <PATTERN>', 'restore only entries matching PATTERN (.gitignore syntax; repeatable)')
        .argParser(collect)
        .default([]),
    )
    .addOption(new Option('--exclude <PATTERN>', 'do not restore entries matching PATTERN (repeatable)').argParser(collect).default([]))
    .addOption(new Option('--path-base64 <B64>', 'a PATH as base64 bytes (repeatable)').argParser(collect).default([]))
    .addHelpText(
      'after',
      '\nBy default a file that exists in the target with other content is kept, named, and the exit code is 1:\nnothing is replaced unless --overwrite says so.\n\nExample:\n  phoenix restore --at 1h --target ~/restored docs/\n  phoenix restore --target ~/Documents --overwrite if-newer --dry-run',
    )
    .action((paths: string[], _o: unknown, c: Command) =>
      run(
        import('./restore-command.js').then((m) =>
          m.restoreCommand(paths, { ...c.opts<Omit<import('./restore-command.js').RestoreFlags, 'verbosity'>>(), ...verbosity(c) }),
        ),
      ),
    );
  base64Option(atOption(withSource(repoCmd('dump', 'write a file to stdout as it was at TIME; a directory as a tar stream'))))
    .argument('[PATH]', 'a file or directory inside the source (default: all of it)')
    .addHelpText('after', '\nExample:\n  phoenix dump --at 1h notes/todo.txt > todo.txt\n  phoenix dump docs | tar x -C /tmp/docs')
    .action((path: string | undefined, _o: unknown, c: Command) => run(browse().then((m) => m.dumpCommand(path, c.opts()))));
  const retention = (): Promise<typeof import('./retention-commands.js')> => import('./retention-commands.js');
  const policy = program.command('policy').description('the retention policy: which instants of the history are kept');
  withSource(settingsOptions(policy.command('show')).option('--json', 'print JSON (one object per line)'))
    .description('print the policy of each source (or of --source) and the repository default')
    .action((_o: unknown, c: Command) => run(retention().then((m) => m.policyShowCommand(c.opts()))));
  withSource(settingsOptions(policy.command('set')).option('--json', 'print JSON (one object per line)'))
    .description('set the policy of --source, or without it the repository default (for every source without its own)')
    .argument('<POLICY>', 'tiers INTERVAL:DURATION, for example "all:24h hourly:7d daily:90d weekly:2y monthly:forever"')
    .option('--min-age <DURATION>', 'keep every commit younger than this, whatever the tiers say (default 1h)')
    .addHelpText(
      'after',
      '\nINTERVAL: all, hourly, daily, weekly, monthly, yearly, or a duration (10s, 5min). DURATION: a duration (36h, 7d, 2y) or forever.\nCounted back from the source\'s latest commit. The latest commit and pinned instants are always kept.\n\nExample:\n  phoenix policy set "all:24h hourly:7d daily:90d weekly:2y monthly:forever"',
    )
    .action((text: string, _o: unknown, c: Command) => run(retention().then((m) => m.policySetCommand(text, c.opts()))));
  withSource(repoCmd('pin', 'keep the state as of TIME whatever the policy says (until phoenix unpin)'))
    .option('--at <TIME>', 'the instant to keep (ISO 8601, or a time ago)')
    .option('--note <TEXT>', 'why (shown by phoenix log)')
    .action((_o: unknown, c: Command) => run(retention().then((m) => m.pinCommand(c.opts()))));
  withSource(repoCmd('unpin', 'remove the pin at TIME'))
    .option('--at <TIME>', 'the pinned instant (as phoenix log --json shows it)')
    .action((_o: unknown, c: Command) => run(retention().then((m) => m.unpinCommand(c.opts()))));
  withSource(repoCmd('forget', 'apply the retention policy: thin the history of each source (or --source) to the instants it keeps'))
    .option('--policy <POLICY>', 'use this policy instead of the stored one')
    .option('--min-age <DURATION>', "keep every commit younger than this (default: the policy's, or 1h)")
    .option('-n, --dry-run', 'list each instant with what keeps it, and what would go; change nothing')
    .addHelpText('after', '\nForget changes the history only; phoenix prune then deletes the data nothing needs any more.')
    .action((_o: unknown, c: Command) => run(retention().then((m) => m.forgetCommand(c.opts()))));
  repoCmd('prune', 'delete the packs and metadata that no kept instant needs')
    .option('-n, --dry-run', 'print what would be deleted and what stays; delete nothing')
    .option('--min-pack-age <DURATION>', 'never delete an unused pack younger than this (default 24h)')
    .option('--max-unused <PERCENT>', 'repack mostly unused packs until at most this share of what stays is unused (default 5)')
    .option('--max-repack-size <SIZE>', 'copy at most this much live data into new packs in one run (500M, 2G; default: no limit)')
    .addHelpText(
      'after',
      '\nRuns beside phoenix watch on any host: it waits for each live writer to acknowledge what it deletes (one lease renewal).',
    )
    .action((_o: unknown, c: Command) => run(retention().then((m) => m.pruneCommand(c.opts()))));
  const keys = (): Promise<typeof import('./key-commands.js')> => import('./key-commands.js');
  const key = program.command('key').description('the passwords (keys) that open the repository');
  settingsOptions(key.command('list'))
    .option('--json', 'print JSON (one object per line)')
    .description('list the keys: id, when and by whom each was added; * marks the one used')
    .action((_o: unknown, c: Command) => run(keys().then((m) => m.keyListCommand(c.opts()))));
  settingsOptions(key.command('add'))
    .option('--json', 'print JSON (one object per line)')
    .option('--new-password-file <FILE>', 'read the new password from FILE (default: ask on the terminal)')
    .description('add a password: the repository opens with it as well')
    .action((_o: unknown, c: Command) => run(keys().then((m) => m.keyAddCommand(c.opts()))));
  settingsOptions(key.command('remove'))
    .option('--json', 'print JSON (one object per line)')
    .argument('<ID>', 'the key (as phoenix key list shows it; a unique prefix will do)')
    .description('remove a key: its password no longer opens the repository (not the last key, not the one in use)')
    .action((id: string, _o: unknown, c: Command) => run(keys().then((m) => m.keyRemoveCommand(id, c.opts()))));
  settingsOptions(key.command('passwd'))
    .option('--json', 'print JSON (one object per line)')
    .option('--new-password-file <FILE>', 'read the new password from FILE (default: ask on the terminal)')
    .description('change the password used: a new key replaces the one that opened the repository')
    .action((_o: unknown, c: Command) => run(keys().then((m) => m.keyPasswdCommand(c.opts()))));
  limitOptions(repoCmd('check', 'verify the repository: journals, checkpoints, every chunk reference; --read-data re-hashes every byte'))
    .option('--read-data', 'also read every pack and verify every chunk')
    .action((_o: unknown, c: Command) => run(repo().then((m) => m.checkCommand(c.opts()))));

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; anything else is a usage error.
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2;
    }
    printError(err);
    return exitCode(err);
  }
  try {
    return await result;
  } catch (err) {
    printError(err);
    return exitCode(err);
  }
}

/** Usage errors (bad arguments, configuration or URL) exit 2; every other failure 1. */
function exitCode(err: unknown): number {
  const code = asPhoenixError(err).code;
  return code === 'PHX_USAGE' || code === 'PHX_CONFIG' || code === 'PHX_BAD_URL' ? 2 : 1;
}

/** The options with which every command that opens the repository finds it (README: settings). */
function settingsOptions(c: Command): Command {
  return c
    .option(
      '-r, --repo <URL>',
      'repository: a directory, or s3://bucket/prefix (default: $PHOENIX_REPOSITORY, repository: in the configuration, or ~/.local/share/phoenix/repository)',
    )
    .option(
      '--password-file <FILE>',
      'read the password from FILE (default: $PHOENIX_PASSWORD_FILE, password-file: in the configuration; or $PHOENIX_PASSWORD)',
    )
    .option('--config <FILE>', 'configuration file (default: $PHOENIX_CONFIG, or ~/.config/phoenix/phoenix.yaml when it exists)')
    .option('--state <DIR>', 'local state directory (default: state: in the configuration, or $XDG_STATE_HOME/phoenix)')
    .option('--sftp-key <FILE>', 'the SSH private key for an sftp:// repository (default: $PHOENIX_SFTP_KEY, the agent, ~/.ssh/id_*)');
}

/** Bandwidth limits, for the commands that move data (README: Bandwidth limits). */
function limitOptions(c: Command): Command {
  return c
    .option(
      '--limit-upload <RATE>',
      'at most RATE of uploads, all connections together: 2MiB/s, 500KiB/s, or KiB/s as in restic (default: limit-upload: in the configuration)',
    )
    .option('--limit-download <RATE>', 'at most RATE of downloads (default: limit-download: in the configuration)');
}

function excludeOption(): Option {
  return new Option('--exclude <PATTERN>', 'exclude paths matching PATTERN (.gitignore syntax; repeatable)').argParser(collect).default([]);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
