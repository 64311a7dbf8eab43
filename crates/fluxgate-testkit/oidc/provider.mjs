// A real OpenID provider for the tests: the certified `oidc-provider` package from the npm
// registry (scripts/test installs it), run by fluxgate-testkit's `oidc` module with the working
// directory where it is installed. One client (Fluxgate's callback), accounts the test
// registers. Written here is only what surrounds the protocol: the login and consent
// interaction completes at once as the account the test registered last, and a test may have
// the token endpoint tamper with its next ID token, to play an attacker.
import Provider from "oidc-provider";
import * as jose from "jose";
import http from "node:http";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const port = Number(env("OIDC_PORT"));
const issuer = env("OIDC_ISSUER");

const signing = await jose.generateKeyPair("RS256", { extractable: true });
const jwk = { ...(await jose.exportJWK(signing.privateKey)), kid: "test-key", alg: "RS256", use: "sig" };
const stranger = await jose.generateKeyPair("RS256");

const accounts = new Map();
let nextLogin = null;
let tamper = null;

const provider = new Provider(issuer, {
  clients: [{
    client_id: env("OIDC_CLIENT_ID"),
    client_secret: env("OIDC_CLIENT_SECRET"),
    redirect_uris: [env("OIDC_REDIRECT_URI")],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  // the scopes' claims in the ID token itself, as most providers put them
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ["fluxgate-test-provider"] },
  findAccount: async (ctx, id) => {
    const account = accounts.get(id);
    return account && { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
});

// The attacker at the token endpoint: the next ID token re-signed with one claim changed, or
// signed by a key the provider does not publish.
provider.use(async (ctx, next) => {
  await next();
  if (tamper && ctx.path === "/token" && ctx.body && ctx.body.id_token) {
    const claims = { ...jose.decodeJwt(ctx.body.id_token), ...(tamper.claims || {}) };
    const key = tamper.stranger ? stranger.privateKey : signing.privateKey;
    ctx.body = {
      ...ctx.body,
      id_token: await new jose.SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: "test-key" }).sign(key),
    };
    tamper = null;
  }
});

const readJson = (req) =>
  new Promise((resolve, reject) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      try { resolve(JSON.parse(body || "{}")); } catch (e) { reject(e); }
    });
  });

const callback = provider.callback();
http.createServer(async (req, res) => {
  try {
    if (req.url.startsWith("/interaction/")) {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === "login") {
        if (!nextLogin) {
          res.statusCode = 400;
          return res.end("the test registered no account to log in as");
        }
        return await provider.interactionFinished(req, res, { login: { accountId: nextLogin } }, { mergeWithLastSubmission: false });
      }
      const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      grant.addOIDCScope(details.params.scope);
      const grantId = await grant.save();
      return await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    if (req.method === "POST" && req.url === "/test/account") {
      const { sub, ...claims } = await readJson(req);
      accounts.set(sub, claims);
      nextLogin = sub;
      return res.end("{}");
    }
    if (req.method === "POST" && req.url === "/test/tamper") {
      tamper = await readJson(req);
      return res.end("{}");
    }
    return callback(req, res);
  } catch (error) {
    res.statusCode = 500;
    res.end(String(error && error.stack || error));
  }
}).listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
