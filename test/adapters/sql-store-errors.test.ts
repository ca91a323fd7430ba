// The SQL store maps its driver's failures into the catalogue in one place: a connection that
// cannot open is SLUICE_ERR_UNAVAILABLE (503), never SLUICE_ERR_INTERNAL (500). Out of file
// descriptors is one of those: the 19,900-listener bench answered 44 listeners 500 on
// `connect EMFILE` from the store's pool.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SqlStore, type SqlClient } from '../../src/adapters/store/sql-store.ts';
import { isSluiceError } from '../../src/core/errors.ts';

/** A client whose every statement fails as the pg pool fails when it cannot open a socket. */
function failingClient(code: string): SqlClient {
  const fail = async (): Promise<never> => { throw Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code, syscall: 'connect' }); };
  return { parallelism: 1, query: fail, exec: fail, transaction: fail, close: async () => {} };
}

describe('SqlStore error mapping', () => {
  for (const code of ['EMFILE', 'ENFILE', 'ECONNREFUSED']) {
    it(`${code} on connect is SLUICE_ERR_UNAVAILABLE (503)`, async () => {
      const store = new SqlStore(failingClient(code));
      await assert.rejects(store.getRequest('00000000-0000-4000-8000-000000000000'), (e: unknown) => {
        assert.ok(isSluiceError(e));
        assert.equal(e.code, 'SLUICE_ERR_UNAVAILABLE');
        assert.equal(e.status, 503);
        return true;
      });
    });
  }
});
