-- Registration jobs (issue 12): the gateway stages an upload here and produces a pointer to it on
-- avatar.registrations; a registration worker analyses it and writes progress and the outcome back, so any
-- gateway can answer a poll. A job is finished once finished_at is set; the staged bytes go with that write.
CREATE TABLE registration_jobs (
    job_id          text PRIMARY KEY,
    avatar_id       text NOT NULL UNIQUE,
    owner           text,                       -- the user id whose token may poll it; NULL: the admin
    user_id         text NOT NULL,              -- whom the avatar is for
    name            text NOT NULL,
    description     text NOT NULL DEFAULT '',
    filename        text,                       -- for warnings only, never a path
    default_tts     text,
    default_voice   text,
    actor           jsonb,                      -- who registers, for the audit entry stored with the avatar
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'analysing', 'storing', 'done', 'failed')),
    stage           text NOT NULL DEFAULT 'queued',
    progress        real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    attempts        integer NOT NULL DEFAULT 0, -- workers that started it (a crash mid-job leaves it to the next)
    result          jsonb,                      -- done: report, warnings, analysis
    error           jsonb,                      -- failed: code, message, report (the gateway maps code to a status)
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE INDEX registration_jobs_unfinished ON registration_jobs (created_at) WHERE finished_at IS NULL;
CREATE INDEX registration_jobs_finished ON registration_jobs (finished_at) WHERE finished_at IS NOT NULL;

-- The upload itself, encrypted like an avatar's source (infra/crypto.py), until the job finishes.
CREATE TABLE registration_uploads (
    job_id          text PRIMARY KEY REFERENCES registration_jobs ON DELETE CASCADE,
    key_id          text NOT NULL,
    sha256          text NOT NULL,              -- of the plaintext: the worker checks it against the job message
    data            bytea NOT NULL
);
ALTER TABLE registration_uploads ALTER COLUMN data SET STORAGE EXTERNAL;  -- ciphertext does not compress
