//! Offline access-token verification: a real token's claims, and refusals for a forged
//! signature, another audience or issuer, another algorithm, and a key rotated in meanwhile.

use crate::{client_for, world};
use fluxgate_sdk::Error;
use fluxgate_testkit::{self, Backend};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use std::time::Duration;

fluxgate_testkit::both_backends!(access_tokens_verify_offline_and_forgeries_do_not);

fn refusal(result: Result<fluxgate_sdk::AccessClaims, Error>) -> String {
    match result {
        Err(Error::InvalidToken(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn access_tokens_verify_offline_and_forgeries_do_not(backend: Backend) {
    let world = world(backend).await;
    let tokens = world.flux.tokens();
    let me = fluxgate_testkit::body(
        fluxgate_testkit::send(&world.app, Method::GET, "/auth/me", &world.ops, None).await,
    )
    .await;
    let claims = tokens.verify_access_token(&world.ops).await.unwrap();
    assert_eq!(
        claims.sub.as_str(),
        me["data"]["user"]["id"].as_str().unwrap()
    );
    assert_eq!(
        claims.org.as_ref().map(|org| org.as_str()),
        me["data"]["active_org"]["id"].as_str()
    );
    assert_eq!(claims.role.as_deref(), Some("owner"));
    assert!(claims.perms.iter().any(|p| p == "keys:write"));

    // a changed signature
    let (signed, signature) = world.ops.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    assert_eq!(
        refusal(tokens.verify_access_token(&forged).await),
        "bad signature"
    );
    // a changed payload under the real signature
    let (header, rest) = world.ops.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let other_payload = world.ops.split('.').nth(1).unwrap().replace('a', "b");
    let swapped = format!("{header}.{other_payload}.{signature}");
    assert!(tokens.verify_access_token(&swapped).await.is_err());

    // HS256 "signed" with the public key (the classic algorithm confusion), and garbage
    let jwks: serde_json::Value = reqwest::get(world.app.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public = jwks["keys"][0]["x"].as_str().unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    hs_header.typ = Some("at+jwt".into());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        refusal(tokens.verify_access_token(&confused).await),
        "algorithm not accepted (only EdDSA)"
    );
    assert_eq!(
        refusal(tokens.verify_access_token("not.a.jwt").await),
        "not a JWT"
    );

    // tokens for another audience or from another issuer
    let elsewhere = client_for(&world.app, "fg_live_x")
        .token_audience("billing")
        .build();
    assert!(refusal(elsewhere.tokens().verify_access_token(&world.ops).await).contains("audience"));
    let other_issuer = fluxgate_sdk::Flux::builder("fg_live_x")
        .base_url(&world.app.base)
        .build();
    assert!(refusal(other_issuer.tokens().verify_access_token(&world.ops).await).contains("iss"));

    // a signing key rotated in after the JWKS was fetched: the unknown kid refetches it
    fluxgate_server::admin::rotate_signing_key(&world.app.config)
        .await
        .unwrap();
    world.app.state().keyring.reload().await.unwrap();
    let fresh = world
        .app
        .login("ops@example.com", fluxgate_testkit::PASSWORD)
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await; // unknown kids refetch at most every 2 s
    assert_eq!(
        tokens.verify_access_token(&fresh).await.unwrap().sub,
        claims.sub
    );
    // the previous key stays published until its tokens expire
    tokens.verify_access_token(&world.ops).await.unwrap();
    world.app.stop().await;
}
