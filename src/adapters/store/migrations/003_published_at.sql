-- Sluice store schema, version 3: when a request's job was last confirmed by the queue.
--
-- Set after the broker confirmed a publish (gateway, sweeper, hand-off of a draining process).
-- The sweeper publishes again only requests whose job was never confirmed (the publish failed,
-- or the process died between the insert and the publish) or whose runner died without one
-- (direct mode): a request merely waiting in a long queue is left alone. null for rows older
-- than this migration that never got a job from this version (they are published once more).
ALTER TABLE requests ADD COLUMN published_at timestamptz;
