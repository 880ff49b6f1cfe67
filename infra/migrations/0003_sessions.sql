-- Streaming sessions: which avatar a session speaks with and who owns it, so any gateway can resume it.
CREATE TABLE sessions (
    session_id      text PRIMARY KEY,
    avatar_id       text NOT NULL,
    user_id         text,                      -- NULL: created by the admin (or in dev mode)
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_active_at  timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz
);

CREATE INDEX sessions_idle ON sessions (last_active_at) WHERE ended_at IS NULL;
