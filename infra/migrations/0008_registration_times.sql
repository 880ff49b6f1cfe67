-- Registration time (issue 14): upload staged -> job finished, counted per outcome into fixed buckets as each job
-- finishes, in the transaction that finishes it, so the figure is cumulative (a Prometheus histogram), survives
-- the finished jobs' rows being forgotten after 15 minutes, and is the same whichever gateway /metrics asks.
CREATE TABLE registration_time_buckets (
    outcome         text NOT NULL CHECK (outcome IN ('done', 'failed')),
    le              double precision NOT NULL,  -- the bucket's upper bound in seconds; 'Infinity' for the last
    jobs            bigint NOT NULL DEFAULT 0,  -- jobs whose time fell in this bucket (not cumulative)
    seconds         double precision NOT NULL DEFAULT 0,  -- their times added up
    PRIMARY KEY (outcome, le)
);
