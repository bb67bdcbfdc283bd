"""The embedded broker's file format: its tables and indexes, the migrations that take an older
file to :data:`SCHEMA_VERSION`, and the query that finds the rows ready to deliver."""

#: The schema this code writes; files with a newer ``PRAGMA user_version`` are refused.
SCHEMA_VERSION = 3

#: Statements that take a file from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE queues (
        name        TEXT PRIMARY KEY,
        auto_delete INTEGER NOT NULL DEFAULT 0,
        expires_ms  INTEGER,
        owner       TEXT,            -- process token of a transient queue's declarer
        created_at  REAL NOT NULL
    );
    CREATE TABLE exchanges (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL
    );
    CREATE TABLE bindings (
        exchange    TEXT NOT NULL,
        type        TEXT NOT NULL,
        routing_key TEXT NOT NULL,
        pattern     TEXT NOT NULL,
        queue       TEXT NOT NULL,
        PRIMARY KEY (exchange, routing_key, pattern, queue)
    ) WITHOUT ROWID;
    CREATE INDEX bindings_queue ON bindings (queue);
    -- AUTOINCREMENT: an id is never reused, so a late ack can only ever delete its own message.
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        queue           TEXT NOT NULL,
        priority        INTEGER NOT NULL,
        payload         TEXT NOT NULL,
        visible_at      REAL NOT NULL,
        holder          TEXT,
        delivered_count INTEGER NOT NULL DEFAULT 0,
        created_at      REAL NOT NULL
    );
    CREATE INDEX messages_fetch ON messages (queue, priority, id, visible_at);
    CREATE INDEX messages_holder ON messages (holder) WHERE holder IS NOT NULL;
    CREATE TABLE processes (
        token   TEXT PRIMARY KEY,
        host    TEXT NOT NULL,
        pid     INTEGER NOT NULL,
        started TEXT              -- start time from /proc/<pid>/stat, when there is one
    );
    """,
    # visible_at before id: a fetch reads only ready rows (see READY), however many future
    # rows (ETA, held) its queue has; messages_fetch walked them all.
    2: """
    DROP INDEX messages_fetch;
    CREATE INDEX messages_ready ON messages (queue, priority, visible_at, id);
    """,
    # Paused queues (qtui.core.pauses), and the workers to give each back to on resume.
    3: """
    CREATE TABLE paused_queues (
        queue TEXT PRIMARY KEY,
        since REAL NOT NULL,
        by    TEXT NOT NULL
    );
    CREATE TABLE paused_consumers (
        queue    TEXT NOT NULL,
        hostname TEXT NOT NULL,
        PRIMARY KEY (queue, hostname)
    ) WITHOUT ROWID;
    """,
}

#: The ready rows of a queue (parameters: queue, now). Every priority level is listed (kombu
#: clamps them to 0-9), so each level is one range of ``messages_ready`` that starts at its
#: oldest ready row and ends at its first future one.
READY_ROWS = "queue = ? AND priority IN (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) AND visible_at <= ?"
#: Their ids in delivery order, best priority first, then by when they became visible (a
#: released row keeps its place: it is visible again from its ``created_at``); read from the
#: index, without a sort.
READY = f"SELECT id FROM messages WHERE {READY_ROWS} ORDER BY priority, visible_at, id"
