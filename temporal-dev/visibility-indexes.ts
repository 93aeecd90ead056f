/**
 * The dev server's visibility table in SQLite carries some sixty indexes: one per system column and
 * per search attribute slot (Bool01…, Int01…, the scheduler's, the batcher's, worker deployments'),
 * each on (column, close time, start time, run ID). Every visibility write — a start, each search
 * attribute upsert, the BuildIds the server records at a workflow's first task, a close — rewrites
 * every one of them, the largest write the server makes for a workflow: right after a burst of
 * starts the server did nothing else for seconds. natflow keeps the indexes its own lists and the
 * Web UI's usual ones use and drops the others at every start (a plain `temporal server
 * start-dev` on the same file does not make them again; a database from before loses them at its
 * next start). A list on a dropped column still answers, by a scan.
 */
/** Lists by time, workflow ID, type, status and task queue (the Web UI's), the namespace division every list is given, and the Keyword slots natflow's attributes take. */
export const VISIBILITY_INDEXES_KEPT = new Set([
  'default_idx',
  'by_execution_time',
  'by_workflow_id',
  'by_workflow_type',
  'by_status',
  'by_task_queue',
  'by_temporal_namespace_division',
  ...Array.from({ length: 10 }, (_, i) => `by_keyword_${String(i + 1).padStart(2, '0')}`),
]);

/** The named indexes of the visibility table in this database file. */
export async function visibilityIndexes(dbFile: string): Promise<string[]> {
  const db = await open(dbFile);
  try {
    return names(db);
  } finally {
    db.close();
  }
}

/** Drops the visibility indexes natflow does not keep, in one transaction beside the running server; their names. */
export async function dropUnusedVisibilityIndexes(dbFile: string): Promise<string[]> {
  const db = await open(dbFile);
  try {
    db.exec('PRAGMA busy_timeout = 10000'); // the server writes meanwhile: wait for its lock
    const dropped = names(db).filter((name) => !VISIBILITY_INDEXES_KEPT.has(name));
    if (dropped.length === 0) return [];
    db.exec(`BEGIN IMMEDIATE; ${dropped.map((name) => `DROP INDEX IF EXISTS "${name}";`).join(' ')} COMMIT;`);
    return dropped;
  } finally {
    db.close();
  }
}

type Database = InstanceType<typeof import('node:sqlite').DatabaseSync>;

function names(db: Database): string[] {
  const rows = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'executions_visibility' AND sql IS NOT NULL").all();
  return rows.map((row) => String(row.name));
}

/**
 * Node 22 marks node:sqlite experimental and warns once as it loads: not a line an operator should
 * read on every start. That one warning is left out; any other passes.
 */
async function open(dbFile: string): Promise<Database> {
  const warn = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: never[]) => {
    if (!String(warning).includes('SQLite is an experimental feature')) warn.call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    const { DatabaseSync } = await import('node:sqlite');
    return new DatabaseSync(dbFile);
  } finally {
    process.emitWarning = warn;
  }
}
