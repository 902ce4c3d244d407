// panva's oidc-provider, configured like Tokenpass's token endpoint, for bench/token/run.py.
//
// One confidential client (client_secret_basic) that may use the client credentials and
// refresh token grants; refresh tokens rotate; every grant, refresh token and opaque access
// token is stored in PostgreSQL through the small adapter below, as Tokenpass stores its
// tokens, so that both servers pay for their writes. The primary process creates the table,
// seeds one refresh-token chain per load-generator client, writes them to SEED_OUT and then
// forks WORKERS processes that share the port (node:cluster), as gunicorn's workers do.
//
// Environment: PORT, DATABASE_URL, WORKERS, CLIENT_ID, CLIENT_SECRET, CHAINS, SEED_OUT,
// ACCESS_TOKEN_FORMAT (opaque | jwt), REFRESH_SCOPE, CC_SCOPE.

import cluster from 'node:cluster';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';

import Provider from 'oidc-provider';
import pg from 'pg';

const env = process.env;
const PORT = Number(env.PORT || 3000);
const ISSUER = `http://127.0.0.1:${PORT}`;
const WORKERS = Number(env.WORKERS || os.availableParallelism());
const CLIENT_ID = env.CLIENT_ID || 'bench-client';
const CLIENT_SECRET = env.CLIENT_SECRET || 'bench-secret';
const CHAINS = Number(env.CHAINS || 8);
const TOKEN_FORMAT = env.ACCESS_TOKEN_FORMAT || 'opaque';
const REFRESH_SCOPE = env.REFRESH_SCOPE || 'openid profile offline_access';
const CC_SCOPE = env.CC_SCOPE || '';
const RESOURCE = 'https://api.tokenpass.bench/';

const pool = new pg.Pool({ connectionString: env.DATABASE_URL, max: 8 });

const SCHEMA = `
CREATE TABLE IF NOT EXISTS oidc_model (
  type text NOT NULL,
  id text NOT NULL,
  payload jsonb NOT NULL,
  grant_id text,
  user_code text,
  uid text,
  expires_at timestamptz,
  consumed_at timestamptz,
  PRIMARY KEY (type, id)
);
CREATE INDEX IF NOT EXISTS oidc_model_grant_id ON oidc_model (grant_id);
CREATE INDEX IF NOT EXISTS oidc_model_uid ON oidc_model (uid);
CREATE INDEX IF NOT EXISTS oidc_model_user_code ON oidc_model (user_code);
`;

// The adapter interface oidc-provider documents (upsert, find, findByUid, findByUserCode,
// consume, destroy, revokeByGrantId), on one table keyed by (model name, id).
class PgAdapter {
  constructor(name) {
    this.name = name;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
    await pool.query(
      `INSERT INTO oidc_model (type, id, payload, grant_id, user_code, uid, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (type, id) DO UPDATE SET payload = EXCLUDED.payload,
         grant_id = EXCLUDED.grant_id, user_code = EXCLUDED.user_code, uid = EXCLUDED.uid,
         expires_at = EXCLUDED.expires_at`,
      [this.name, id, payload, payload.grantId ?? null, payload.userCode ?? null,
        payload.uid ?? null, expiresAt],
    );
  }

  async #findBy(column, value) {
    const { rows } = await pool.query(
      `SELECT payload, consumed_at FROM oidc_model
       WHERE type = $1 AND ${column} = $2 AND (expires_at IS NULL OR expires_at > now())`,
      [this.name, value],
    );
    if (!rows.length) return undefined;
    const [{ payload, consumed_at: consumedAt }] = rows;
    return consumedAt ? { ...payload, consumed: true } : payload;
  }

  find(id) { return this.#findBy('id', id); }

  findByUid(uid) { return this.#findBy('uid', uid); }

  findByUserCode(userCode) { return this.#findBy('user_code', userCode); }

  async consume(id) {
    await pool.query(
      'UPDATE oidc_model SET consumed_at = now() WHERE type = $1 AND id = $2',
      [this.name, id],
    );
  }

  async destroy(id) {
    await pool.query('DELETE FROM oidc_model WHERE type = $1 AND id = $2', [this.name, id]);
  }

  async revokeByGrantId(grantId) {
    await pool.query('DELETE FROM oidc_model WHERE grant_id = $1', [grantId]);
  }
}

function signingJwk() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function makeProvider(jwk) {
  const jwtAccessTokens = TOKEN_FORMAT === 'jwt';
  return new Provider(ISSUER, {
    adapter: PgAdapter,
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: ['https://partner.example/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: `${REFRESH_SCOPE} ${CC_SCOPE}`.trim(),
    }],
    jwks: { keys: [jwk] },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'phone', 'wallet:charge', 'settlement:read'],
    claims: { openid: ['sub'], profile: ['name'] },
    async findAccount(ctx, sub) {
      return { accountId: sub, async claims() { return { sub, name: 'Bench User' }; } };
    },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      // RFC 9068 JWT access tokens need a resource server; every token is for the one API.
      resourceIndicators: jwtAccessTokens ? {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'openid profile offline_access wallet:charge settlement:read',
          audience: RESOURCE,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 3600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      } : { enabled: false },
    },
    pkce: { required: () => true },
    rotateRefreshToken: true,
    ttl: {
      AccessToken: 3600,
      ClientCredentials: 3600,
      IdToken: 3600,
      RefreshToken: 30 * 24 * 3600,
      Grant: 30 * 24 * 3600,
    },
    cookies: { keys: ['bench-cookie-key-not-secret'] },
  });
}

async function seed(provider) {
  await pool.query(SCHEMA);
  await pool.query('TRUNCATE oidc_model');
  const client = await provider.Client.find(CLIENT_ID);
  const tokens = [];
  for (let i = 0; i < CHAINS; i += 1) {
    const accountId = `bench-user-${i}`;
    const grant = new provider.Grant({ accountId, clientId: CLIENT_ID });
    grant.addOIDCScope(REFRESH_SCOPE);
    if (TOKEN_FORMAT === 'jwt') grant.addResourceScope(RESOURCE, REFRESH_SCOPE);
    const grantId = await grant.save();
    const refreshToken = new provider.RefreshToken({
      accountId,
      client,
      grantId,
      gty: 'authorization_code',
      scope: REFRESH_SCOPE,
      ...(TOKEN_FORMAT === 'jwt' ? { resource: RESOURCE } : {}),
    });
    tokens.push(await refreshToken.save());
  }
  return tokens;
}

async function main() {
  if (cluster.isPrimary) {
    const jwk = signingJwk();
    const tokens = await seed(makeProvider(jwk));
    if (env.SEED_OUT) writeFileSync(env.SEED_OUT, JSON.stringify({ refresh_tokens: tokens }));
    let listening = 0;
    cluster.on('listening', () => {
      listening += 1;
      if (listening === WORKERS) console.log(`ready ${ISSUER} (${WORKERS} workers)`);
    });
    cluster.on('exit', (worker, code, signal) => {
      if (signal !== 'SIGTERM') console.error(`worker ${worker.process.pid} exited: ${code ?? signal}`);
    });
    for (let i = 0; i < WORKERS; i += 1) cluster.fork({ BENCH_JWK: JSON.stringify(jwk) });
    const stop = () => {
      for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
      pool.end().finally(() => process.exit(0));
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  } else {
    const provider = makeProvider(JSON.parse(env.BENCH_JWK));
    provider.on('server_error', (ctx, err) => console.error('server_error', err));
    http.createServer(provider.callback()).listen(PORT, '127.0.0.1');
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
