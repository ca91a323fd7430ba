// POST /v1/embeddings, in OpenAI's shape. Accounted like a chat request (1 request and the input
// tokens against the caller's windows, one request row and one ledger row), run in this gateway
// under a stream lease (it is a direct model call), and answered with the vectors and the usage.
import type { FastifyInstance } from 'fastify';
import { parseEmbeddingBody } from '../core/embedding-request.ts';
import { SluiceError } from '../core/errors.ts';
import type { GatewayDeps } from './gateway-deps.ts';
import { clientGone } from './openai-routes.ts';
import { principalOf } from './server.ts';

export function registerEmbeddingRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  app.post('/v1/embeddings', { config: { auth: 'user' as const } }, async (req, reply) => {
    const principal = principalOf(req);
    const input = parseEmbeddingBody(req.body);
    // Before anything is reserved or stored: a backend that cannot embed leaves no trace.
    if (!deps.runner.embeds) throw new SluiceError('SLUICE_ERR_EMBEDDINGS_UNSUPPORTED', 'The model backend of this gateway does not serve embeddings');
    const lease = await deps.leases.acquire(principal, crypto.randomUUID());
    try {
      const { record, admitted, result } = await deps.requests.embed(principal, input, clientGone(reply));
      reply.headers({ 'x-request-id': record.id, ...admitted.headers });
      return {
        object: 'list',
        data: result.data.map((d) => ({ object: 'embedding', index: d.index, embedding: d.embedding })),
        model: input.model,
        usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
      };
    } finally {
      await lease.release();
    }
  });
}
