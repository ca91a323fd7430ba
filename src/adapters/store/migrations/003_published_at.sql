-- Sluice store schema, version 3: when a request's job was last confirmed by the queue, and how
-- many of its attempts were handed off by a draining process.
--
-- Set after the broker confirmed a publish (gateway, sweeper, hand-off of a draining process).
-- The sweeper publishes again only requests whose job was never confirmed (the publish failed,
-- or the process died between the insert and the publish) or whose runner died without one
-- (direct mode): a request merely waiting in a long queue is left alone. null for rows older
-- than this migration that never got a job from this version (they are published once more).
ALTER TABLE requests ADD COLUMN published_at timestamptz;

-- Attempts a draining process stopped and gave back (SIGTERM): they do not count toward the
-- worker's maximum attempts, so a long request that lives through a rolling restart is not failed.
ALTER TABLE requests ADD COLUMN handoffs integer NOT NULL DEFAULT 0;
