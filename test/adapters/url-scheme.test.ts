// Adapter URLs: the scheme every factory reads, and the redaction every log line and error uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redact, urlScheme } from '../../src/adapters/url-scheme.ts';

test('urlScheme: lower case, without the colon, empty when there is none', () => {
  assert.equal(urlScheme('REDIS://127.0.0.1:6379'), 'redis');
  assert.equal(urlScheme('memory://'), 'memory');
  assert.equal(urlScheme('127.0.0.1:6379'), '');
});

test('redact masks a password and leaves every other character as it was', () => {
  assert.equal(redact('amqp://guest:s3cret@127.0.0.1:5672/vhost'), 'amqp://guest:***@127.0.0.1:5672/vhost');
  assert.equal(redact('nats://u:p@host:4222'), 'nats://u:***@host:4222');
  assert.equal(redact('postgres://postgres@127.0.0.1:5432/test'), 'postgres://postgres@127.0.0.1:5432/test');
  assert.equal(redact('pglite://./.sluice/db'), 'pglite://./.sluice/db');
});
