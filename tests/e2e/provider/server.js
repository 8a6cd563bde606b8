// A real OAuth 2.0 authorization server (oidc-provider 9) on loopback, for oauth-broker's
// end-to-end tests. Started by tests/e2e/provider.rs; prints exactly one line
// `READY <port>` on stdout once it listens. Everything else goes to stderr.
//
// Configuration: a JSON object in the env var PROVIDER_CONFIG, or as the first argument
// (inline JSON, or a path to a JSON file). Keys (all optional except `clients`):
//   port                    0 = any free port
//   clients                 [{ client_id, client_secret, token_endpoint_auth_method,
//                              redirect_uris: [..], grant_types: [..], scope?,
//                              keys?: [{ pem, kid? }],
//                              require_pushed_authorization_requests? }]
//                           `keys`: public keys (SPKI PEM) or X.509 certificates (PEM) of a
//                           private_key_jwt client, turned into its JWKS here.
//   access_token_ttl        seconds, access tokens from authorization_code / refresh_token
//                           / device_code / the on-behalf-of grants
//   client_credentials_ttl  seconds, client_credentials tokens (default: access_token_ttl)
//   refresh_token_ttl       seconds (default 14 days)
//   rotate_refresh_token    true: each refresh returns a new refresh token, the old one dies
//   refresh_token_requires_offline_access
//                           false (default): a client allowed the refresh_token grant
//                           always gets one; true: only for scope offline_access + prompt=consent
//   scopes                  extra scope names the provider knows, e.g. ["read", "write"]
//   resource                { indicator, scope, format: "opaque" | "jwt" }: the resource
//                           server that client_credentials tokens are issued for by default
//   device_code_ttl         seconds a device code (RFC 8628) lives (default 600)
//   device_poll_interval    seconds, the `interval` of device authorization responses
//                           (default 5, RFC 8628 3.2); polling faster gets `slow_down`
//
// Test-only routes (not OAuth): GET /test/userinfo-like, GET /test/client-assertions,
// GET /test/stats; see the functions below.
//
// State (tokens, grants, sessions) lives in memory: a restart forgets every token.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import Provider, { errors } from 'oidc-provider';

// oidc-provider prints "NOTICE: default ... function called" with console.info, i.e. on
// stdout, the first time a default page or policy runs (the device flow's user code pages,
// the introspection policy). stdout belongs to the READY line: send those to stderr.
console.info = console.error;

function readConfig() {
  const raw = process.env.PROVIDER_CONFIG || process.argv[2];
  if (!raw) throw new Error('no configuration: set PROVIDER_CONFIG or pass JSON as argv[2]');
  return JSON.parse(raw.trimStart().startsWith('{') ? raw : fs.readFileSync(raw, 'utf8'));
}

const cfg = readConfig();
const accessTokenTtl = cfg.access_token_ttl ?? 300;
const clientCredentialsTtl = cfg.client_credentials_ttl ?? accessTokenTtl;
const refreshTokenTtl = cfg.refresh_token_ttl ?? 14 * 24 * 60 * 60;
const deviceCodeTtl = cfg.device_code_ttl ?? 600;
const devicePollInterval = cfg.device_poll_interval ?? 5;
const knownScopes = ['openid', 'offline_access', ...(cfg.scopes ?? [])];

const GRANT_DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const GRANT_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

const base64url = (buf) => Buffer.from(buf).toString('base64url');

// One key of a private_key_jwt client: a public key or certificate PEM becomes a public
// JWK. A certificate also gives `x5c`, `x5t` and `x5t#S256` (RFC 7517 4.6-4.9), which is
// how Microsoft Entra registers client certificates. No `alg` member, so one RSA key
// verifies RS256 and PS256 alike.
function jwkFromPem({ pem, kid }) {
  const jwk = crypto.createPublicKey(pem).export({ format: 'jwk' });
  if (kid) jwk.kid = kid;
  jwk.use = 'sig';
  if (pem.includes('BEGIN CERTIFICATE')) {
    const der = new crypto.X509Certificate(pem).raw;
    jwk.x5c = [der.toString('base64')];
    jwk.x5t = base64url(crypto.createHash('sha1').update(der).digest());
    jwk['x5t#S256'] = base64url(crypto.createHash('sha256').update(der).digest());
  }
  return jwk;
}

// client_id -> its public JWKs (private_key_jwt clients only).
const clientJwks = new Map(cfg.clients.map((c) => [c.client_id, (c.keys ?? []).map(jwkFromPem)]));

function clientMetadata(c) {
  const grantTypes = c.grant_types ?? ['authorization_code', 'refresh_token'];
  const usesRedirects = grantTypes.includes('authorization_code');
  const method = c.token_endpoint_auth_method ?? 'client_secret_basic';
  return {
    client_id: c.client_id,
    ...(method === 'private_key_jwt' ? {} : { client_secret: c.client_secret }),
    token_endpoint_auth_method: method,
    grant_types: grantTypes,
    // A client without the authorization_code grant must not have response types.
    response_types: usesRedirects ? ['code'] : [],
    redirect_uris: usesRedirects ? (c.redirect_uris ?? []) : [],
    // 'web' clients may register http:// redirect URIs for the code flow (only the
    // implicit flow demands https).
    application_type: 'web',
    ...(c.scope ? { scope: c.scope } : {}),
    ...(c.keys?.length ? { jwks: { keys: clientJwks.get(c.client_id) } } : {}),
    // RFC 9126 5: this client's plain authorization requests are refused.
    ...(c.require_pushed_authorization_requests ? { require_pushed_authorization_requests: true } : {}),
  };
}

function configuration() {
  const resource = cfg.resource;
  return {
    clients: cfg.clients.map(clientMetadata),
    scopes: knownScopes,
    // PKCE on every authorization request (oidc-provider 9 only knows S256).
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true }, // built-in login + consent pages, any login works
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      // RFC 8628. The built-in user code pages (/device) are development pages, like the
      // login and consent pages.
      deviceFlow: { enabled: true },
      // RFC 9126, for every client; a client registered with
      // require_pushed_authorization_requests must use it.
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
      resourceIndicators: {
        enabled: true,
        // Only client_credentials requests without `resource` get the configured resource
        // server; the code flow keeps opaque tokens for the provider itself.
        defaultResource(ctx) {
          if (resource && ctx.oidc.route === 'token' && ctx.oidc.params.grant_type === 'client_credentials') {
            return resource.indicator;
          }
          return undefined;
        },
        getResourceServerInfo(ctx, indicator) {
          if (resource && indicator === resource.indicator) {
            return {
              scope: resource.scope ?? (cfg.scopes ?? []).join(' '),
              audience: resource.indicator,
              accessTokenTTL: clientCredentialsTtl,
              accessTokenFormat: resource.format ?? 'opaque',
            };
          }
          throw new errors.InvalidTarget();
        },
        useGrantedResource: () => true,
      },
    },
    // Called only once the assertion's signature and claims checked out. oidc-provider
    // itself ignores `x5t` / `x5t#S256` (without `kid` it tries every key of the right
    // type), so a thumbprint that names no registered certificate would pass. Microsoft
    // Entra refuses it; so do we, to catch a client that computes the thumbprint wrong.
    async assertJwtClientAuthClaimsAndHeader(ctx, claims, header, client) {
      const registered = clientJwks.get(client.clientId) ?? [];
      for (const member of ['x5t', 'x5t#S256']) {
        if (header[member] !== undefined && !registered.some((jwk) => jwk[member] === header[member])) {
          throw new errors.InvalidClientAuth(`${member} does not match a registered certificate`);
        }
      }
    },
    issueRefreshToken(ctx, client, code) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return cfg.refresh_token_requires_offline_access ? code.scopes.has('offline_access') : true;
    },
    // Tokens outlive the provider's browser session (the default ties them to it unless
    // offline_access was granted).
    expiresWithSession: () => false,
    rotateRefreshToken: cfg.rotate_refresh_token ?? true,
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: clientCredentialsTtl,
      RefreshToken: refreshTokenTtl,
      AuthorizationCode: 60,
      DeviceCode: deviceCodeTtl,
      Grant: refreshTokenTtl,
      Interaction: 600,
      Session: 3600,
      IdToken: 3600,
    },
    // Development keys: oidc-provider generates signing keys and cookie keys itself.
    findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

// Verifies a JWT access token with this provider's own signing keys.
async function verifyOwnJwt(provider, port, token) {
  const jwks = await (await fetch(`http://127.0.0.1:${port}/jwks`)).json();
  const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer: provider.issuer });
  return payload;
}

// The access token behind `token` if this provider issued it and still honours it (opaque:
// looked up, so revocation counts; jwt: signature and expiry checked), else undefined.
// Returns { format, client_id, sub, scope }.
async function honouredAccessToken(provider, port, token) {
  if (token.split('.').length === 3) {
    try {
      const payload = await verifyOwnJwt(provider, port, token);
      return { format: 'jwt', client_id: payload.client_id, sub: payload.sub, scope: payload.scope };
    } catch {
      return undefined;
    }
  }
  const at = (await provider.AccessToken.find(token)) ?? (await provider.ClientCredentials.find(token));
  // find() allows the provider's 15 s clock tolerance; this is exact.
  if (at && !at.isExpired) {
    return { format: 'opaque', client_id: at.clientId, sub: at.accountId, scope: at.scope };
  }
  return undefined;
}

// GET /test/userinfo-like: 200 with a JSON summary if the bearer token is an access token
// this provider issued and still honours, else 401. Stands in for an API that a
// connection's `test_url` calls.
async function userinfoLike(provider, port, req, res) {
  const auth = req.headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(auth);
  const info = match ? await honouredAccessToken(provider, port, match[1]) : undefined;
  if (info) {
    sendJson(res, 200, { active: true, ...info });
  } else {
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer error="invalid_token"' });
    res.end(JSON.stringify({ error: 'invalid_token' }));
  }
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// On-behalf-of grants, registered with provider.registerGrantType. Both take an access
// token this provider issued to some client for a user and still honours, and answer with
// a new access token for the *requesting* client acting as the same user (`sub`), in a
// grant of its own; plus a refresh token when `offline_access` is requested and the client
// may use the refresh_token grant, so the normal refresh_token grant keeps it going.
// Client authentication (basic, post, private_key_jwt) happened before the handler runs.
//
// Not checked: the subject token's audience (Entra demands that it names the middle-tier
// API, i.e. the requesting client); any user access token from this provider will do.
// RFC 8693's `audience` parameter is accepted and ignored (the token is for this provider).
async function issueOnBehalfOf(ctx, provider, port, subjectToken, requestedScope, gty) {
  const { InvalidGrant } = errors;
  const subject = await honouredAccessToken(provider, port, subjectToken);
  if (!subject) throw new InvalidGrant('subject token is unknown, expired or revoked');
  if (!subject.sub) throw new InvalidGrant('subject token has no end-user (sub)');

  const { client } = ctx.oidc;
  const clientScopes = client.scope ? new Set(client.scope.split(' ')) : undefined;
  // Like everywhere else here: scopes the provider (or the client) does not know are dropped.
  const scopes = (requestedScope ?? subject.scope ?? '')
    .split(' ')
    .filter((s) => knownScopes.includes(s) && (!clientScopes || clientScopes.has(s)));
  const scope = [...new Set(scopes)].join(' ');

  const grant = new provider.Grant({ accountId: subject.sub, clientId: client.clientId });
  if (scope) grant.addOIDCScope(scope);
  const grantId = await grant.save();

  const at = new provider.AccessToken({ accountId: subject.sub, client, grantId, gty, scope: scope || undefined });
  const accessToken = await at.save();

  let refreshToken;
  if (scopes.includes('offline_access') && client.grantTypeAllowed('refresh_token')) {
    const rt = new provider.RefreshToken({
      accountId: subject.sub, client, grantId, gty, scope: scope || undefined, rotations: 0,
    });
    refreshToken = await rt.save();
  }
  return {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: at.expiration,
    scope: scope || undefined,
    refresh_token: refreshToken,
  };
}

function registerOnBehalfOfGrants(provider, port) {
  const { InvalidRequest } = errors;

  // RFC 8693 2.1 token exchange, impersonation semantics (no actor token).
  provider.registerGrantType(GRANT_TOKEN_EXCHANGE, async (ctx) => {
    const p = ctx.oidc.params;
    if (!p.subject_token) throw new InvalidRequest('missing required parameter subject_token');
    if (p.subject_token_type !== TOKEN_TYPE_ACCESS_TOKEN) {
      throw new InvalidRequest(`subject_token_type must be ${TOKEN_TYPE_ACCESS_TOKEN}`);
    }
    if (p.requested_token_type !== undefined && p.requested_token_type !== TOKEN_TYPE_ACCESS_TOKEN) {
      throw new InvalidRequest(`only ${TOKEN_TYPE_ACCESS_TOKEN} can be requested`);
    }
    if (p.actor_token !== undefined) throw new InvalidRequest('actor_token (delegation) is not supported');
    const body = await issueOnBehalfOf(ctx, provider, port, p.subject_token, p.scope, 'token_exchange');
    // RFC 8693 2.2.1: issued_token_type is required.
    ctx.body = { ...body, issued_token_type: TOKEN_TYPE_ACCESS_TOKEN };
  }, ['subject_token', 'subject_token_type', 'requested_token_type', 'scope', 'audience', 'actor_token', 'actor_token_type']);

  // Microsoft Entra's on-behalf-of flow: RFC 7523 2.1's jwt-bearer grant with
  // requested_token_use=on_behalf_of and a required scope. Only that use is implemented.
  provider.registerGrantType(GRANT_JWT_BEARER, async (ctx) => {
    const p = ctx.oidc.params;
    if (!p.assertion) throw new InvalidRequest('missing required parameter assertion');
    if (p.requested_token_use !== 'on_behalf_of') throw new InvalidRequest('requested_token_use must be on_behalf_of');
    if (!p.scope) throw new InvalidRequest('missing required parameter scope');
    ctx.body = await issueOnBehalfOf(ctx, provider, port, p.assertion, p.scope, 'on_behalf_of');
  }, ['assertion', 'requested_token_use', 'scope']);
}

// Counters for GET /test/stats, so a test can prove what the broker did at the provider.
const stats = {
  // Every POST /token, by its grant_type ("(none)" when missing), whatever the outcome.
  token_requests: {},
  // Refresh requests that presented a refresh token that had already been rotated away
  // (oidc-provider answers invalid_grant and revokes the whole grant).
  refresh_token_reuse: 0,
  // Grants revoked: by that reuse detection, by revoking a refresh token at the
  // revocation endpoint, by replaying an authorization or device code.
  grants_revoked: 0,
  // Refresh tokens created (code, device, on-behalf-of grants and each rotation).
  refresh_tokens_issued: 0,
  // Device token requests answered slow_down (RFC 8628 3.5).
  device_slow_down: 0,
};

// Every client_assertion received (RFC 7523 2.2), decoded but not verified, for
// GET /test/client-assertions: { endpoint, header, claims, status } where status is the
// HTTP status this server answered.
const clientAssertions = [];

// The client-authenticated endpoints, by path.
const authenticatedEndpoints = new Map([
  ['/token', 'token'],
  ['/token/revocation', 'revocation'],
  ['/token/introspection', 'introspection'],
  ['/request', 'pushed_authorization_request'],
  ['/device/auth', 'device_authorization'],
]);

function recordClientAssertion(endpoint, form, res) {
  const assertion = form.get('client_assertion');
  if (assertion === null) return;
  const entry = { endpoint };
  try {
    entry.header = decodeProtectedHeader(assertion);
    entry.claims = decodeJwt(assertion);
  } catch (err) {
    entry.error = `not a JWT: ${err.message}`;
  }
  clientAssertions.push(entry);
  res.on('finish', () => {
    entry.status = res.statusCode;
  });
}

// oidc-provider 9 accepts client_secret_basic and client_secret_post interchangeably for
// a client registered with either. A real provider may not, so the client-authenticated
// endpoints here insist on the registered method (401 invalid_client).
const authMethods = new Map(cfg.clients.map((c) => [c.client_id, c.token_endpoint_auth_method ?? 'client_secret_basic']));

function wrongAuthMethod(req, form) {
  const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  let clientId = form.get('client_id');
  if (basic) {
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    clientId = decoded.slice(0, decoded.indexOf(':'));
    try {
      clientId = decodeURIComponent(clientId.replace(/\+/g, '%20')); // RFC 6749 2.3.1
    } catch {
      // not form-encoded: keep it raw, oidc-provider will reject it
    }
  }
  const registered = authMethods.get(clientId);
  if (registered === 'client_secret_basic' && !basic) return `${clientId} must use client_secret_basic`;
  if (registered === 'client_secret_post' && basic) return `${clientId} must use client_secret_post`;
  return undefined;
}

// Reads the body of a client-authenticated POST (handed on as `req.body`, which
// oidc-provider then uses), records and counts it, and refuses a wrong auth method.
async function authenticatedPost(endpoint, req, res, callback) {
  req.receivedAt = Date.now();
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  req.body = Buffer.concat(chunks);
  const form = new URLSearchParams(req.body.toString('utf8'));
  recordClientAssertion(endpoint, form, res);
  if (endpoint === 'token') {
    const grantType = form.get('grant_type') ?? '(none)';
    stats.token_requests[grantType] = (stats.token_requests[grantType] ?? 0) + 1;
  }
  const problem = wrongAuthMethod(req, form);
  if (problem) {
    console.error('invalid_client:', problem);
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="token"' });
    res.end(JSON.stringify({ error: 'invalid_client', error_description: problem }));
  } else {
    callback(req, res);
  }
}

// RFC 8628 3.2 / 3.5, which oidc-provider 9 leaves out: device authorization responses
// carry `interval`, and a poll that comes sooner than `interval` seconds after the
// previous poll of the same device code, while the user has not decided yet, is answered
// `slow_down` instead of `authorization_pending`. Each slow_down adds 5 s to the interval
// that device code must keep (the client MUST add 5 s, RFC 8628 3.5). 250 ms of slack
// absorbs scheduling jitter between a client's sleep and the request's arrival.
const devicePolls = new Map(); // device_code -> { last, interval }

async function devicePacing(ctx, next) {
  await next();
  const route = ctx.oidc?.route;
  if (route === 'device_authorization' && ctx.status === 200 && ctx.body) {
    ctx.body.interval = devicePollInterval;
  } else if (route === 'token' && ctx.oidc.params?.grant_type === GRANT_DEVICE_CODE
      && ctx.status === 400 && ctx.body?.error === 'authorization_pending') {
    const code = ctx.oidc.params.device_code;
    const now = ctx.req.receivedAt ?? Date.now();
    const poll = devicePolls.get(code) ?? { last: undefined, interval: devicePollInterval };
    if (poll.last !== undefined && now - poll.last < poll.interval * 1000 - 250) {
      poll.interval += 5;
      stats.device_slow_down += 1;
      ctx.body = {
        error: 'slow_down',
        error_description: `polled too soon; wait ${poll.interval} s between polls`,
      };
    }
    poll.last = now;
    devicePolls.set(code, poll);
  }
}

const server = http.createServer();
server.listen(cfg.port ?? 0, '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, configuration());
  provider.proxy = false;
  registerOnBehalfOfGrants(provider, port);
  provider.use(devicePacing);
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  provider.on('grant.error', (ctx, err) => {
    console.error('grant.error', err.message, err.error_description ?? '', err.error_detail ?? '');
    // refresh_token.js: a consumed (rotated) refresh token presented again.
    if (ctx.oidc?.params?.grant_type === 'refresh_token' && err.error_detail === 'refresh token already used') {
      stats.refresh_token_reuse += 1;
    }
  });
  provider.on('grant.revoked', () => {
    stats.grants_revoked += 1;
  });
  provider.on('refresh_token.saved', () => {
    stats.refresh_tokens_issued += 1;
  });
  const callback = provider.callback();
  const failed = (res) => (err) => {
    console.error(err);
    res.writeHead(500);
    res.end();
  };
  server.on('request', (req, res) => {
    const path = req.url.split('?')[0];
    if (req.method === 'GET' && path === '/test/userinfo-like') {
      userinfoLike(provider, port, req, res).catch(failed(res));
    } else if (req.method === 'GET' && path === '/test/client-assertions') {
      sendJson(res, 200, clientAssertions);
    } else if (req.method === 'GET' && path === '/test/stats') {
      sendJson(res, 200, stats);
    } else if (req.method === 'POST' && authenticatedEndpoints.has(path)) {
      authenticatedPost(authenticatedEndpoints.get(path), req, res, callback).catch(failed(res));
    } else {
      callback(req, res);
    }
  });
  process.stdout.write(`READY ${port}\n`);
});

// Stop when the test harness goes away (it holds our stdin open and sets this variable),
// so a killed test binary leaves no provider behind.
if (process.env.PROVIDER_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
