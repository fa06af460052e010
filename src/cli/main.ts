import { Command, CommanderError, Option } from 'commander';
import { eventsCommand } from './events.js';
import { printError } from './output.js';

/** Exit codes: 0 success, 1 failure, 2 usage error. */
export async function main(argv: string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(0);
  const program = new Command('phoenix')
    .description('Real-time backup for Linux: every change, versioned, deduplicated and encrypted.')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('events')
    .description('print the changes Phoenix sees under SOURCE as they happen (like inotifywait -m -r)')
    .argument('<SOURCE>', 'directory to watch')
    .option('--json', 'one JSON object per line')
    .addOption(new Option('--exclude <PATTERN>', 'exclude paths matching PATTERN (.gitignore syntax; repeatable)').argParser(collect).default([]))
    .option('--one-file-system', 'do not cross file system boundaries')
    .action((source: string, opts: { json?: boolean; exclude: string[]; oneFileSystem?: boolean }) => {
      result = eventsCommand(source, opts);
    });

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; anything else is a usage error.
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2;
    }
    printError(err);
    return 1;
  }
  return await result;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
