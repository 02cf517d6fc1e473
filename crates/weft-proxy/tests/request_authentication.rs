//! RequestAuthentication on a real sidecar, as Istio's "Authentication Policy" task uses
//! it, with a test issuer whose key and JWKS the test makes: no token passes, a bad one is
//! 401 with Envoy's words, a good one gives the request its principal and claims, which
//! AuthorizationPolicy then requires (403 without). Keys inline and from a `jwksUri` the
//! test serves; Istio's token locations and header operations.

mod support;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};
use support::mesh::*;
use support::{Backend, HttpClient};

const ISSUER: &str = "testing@secure.istio.io";

/// A signing key and the JWKS that publishes it.
struct Issuer {
    key: EncodingKey,
    jwks: String,
}

impl Issuer {
    fn new(kid: &str) -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // An uncompressed point: 0x04, then x and y.
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]})
        .to_string();
        Issuer {
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwks,
        }
    }

    fn token(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("test".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"iss": ISSUER, "sub": ISSUER, "exp": now() + 3600, "groups": ["group1"], "scope": "read write"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

fn request_authentication(rule: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  jwtRules:\n  - issuer: \"{ISSUER}\"\n{rule}\n---\n"
    )
}

fn inline(jwks: &str) -> String {
    format!("    jwks: '{jwks}'")
}

/// reviews' sidecar alone, in front of `app`, with `yaml`; requests go straight to its
/// inbound port, as a caller outside the mesh sends them.
async fn sidecar(app: &Backend, yaml: &str) -> (Sidecar, HttpClient) {
    let server = Sidecar::start(
        workload("reviews-v1", "reviews", "bookinfo-reviews"),
        None,
        Some(app.addr),
        yaml,
    )
    .await;
    let http = HttpClient::new(server.proxy.inbound_addr);
    (server, http)
}

/// Serves `jwks` to every GET, counting them.
async fn jwks_server(
    jwks: String,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = fetched.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                jwks.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (addr, fetched)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_and_bad_ones_refused_with_envoys_words() {
    let issuer = Issuer::new("test");
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let (mut server, http) = sidecar(&app, &request_authentication(&inline(&issuer.jwks))).await;

    // No token: let through, as Istio does without a policy that requires one.
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    let _ = server.next_log().await;
    // A verified token goes no further than the sidecar (no forwardOriginalToken).
    let good = issuer.token(claims(json!({})));
    let answer = http
        .get("reviews:9080", "/", &[("authorization", &bearer(&good))])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(app
        .seen
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .headers
        .get("authorization")
        .is_none());
    let _ = server.next_log().await;

    let refused = |token: String| {
        let http = http.clone();
        async move {
            let a = http
                .get("reviews:9080", "/", &[("authorization", &bearer(&token))])
                .await;
            (a.status.as_u16(), a.text())
        }
    };
    assert_eq!(
        refused("deadbeef".into()).await,
        (
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
                .into()
        )
    );
    assert_eq!(
        refused(issuer.token(claims(json!({"exp": now() - 3600})))).await,
        (401, "Jwt is expired".into())
    );
    // Envoy's challenge names the request's URL as the realm.
    let challenged = http
        .get(
            "reviews:9080",
            "/reviews/1",
            &[("authorization", "Bearer deadbeef")],
        )
        .await;
    assert_eq!(
        challenged.headers["www-authenticate"],
        "Bearer realm=\"http://reviews:9080/reviews/1\", error=\"invalid_token\""
    );
    let _ = server.next_log().await;
    assert_eq!(
        refused(Issuer::new("test").token(claims(json!({})))).await,
        (401, "Jwt verification fails".into())
    );
    assert_eq!(
        refused(issuer.token(claims(json!({"iss": "someone-else"})))).await,
        (401, "Jwt issuer is not configured".into())
    );
    let _ = server.next_log().await;
    let _ = server.next_log().await;
    let _ = server.next_log().await;
    let entry = server.next_log().await;
    assert_eq!(entry.status, 401);
    assert_eq!(
        entry.details,
        "jwt_authn_access_denied{Jwt_issuer_is_not_configured}"
    );
    assert_eq!(app.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requires_the_request_principal_and_reads_claims() {
    let issuer = Issuer::new("test");
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let require = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: require-jwt\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"testing@secure.istio.io/testing@secure.istio.io\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [group1]\n    - key: request.auth.claims[scope]\n      values: [write]\n";
    let yaml = request_authentication(&format!(
        "{}\n    audiences: [reviews, bookinfo]",
        inline(&issuer.jwks)
    )) + require;
    let (_server, http) = sidecar(&app, &yaml).await;
    let get = |token: Option<String>| {
        let http = http.clone();
        async move {
            let auth = token.map(|t| bearer(&t));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let a = http.get("reviews:9080", "/", &headers).await;
            (a.status.as_u16(), a.text())
        }
    };
    assert_eq!(get(None).await, (403, "RBAC: access denied".into()));
    assert_eq!(
        get(Some(issuer.token(claims(json!({"aud": "bookinfo"})))))
            .await
            .0,
        200
    );
    assert_eq!(
        get(Some(issuer.token(claims(
            json!({"aud": "bookinfo", "groups": ["group2"]})
        ))))
        .await
        .0,
        403
    );
    assert_eq!(
        get(Some(
            issuer.token(claims(json!({"aud": "bookinfo", "scope": "read"})))
        ))
        .await
        .0,
        403
    );
    assert_eq!(
        get(Some(issuer.token(claims(json!({"aud": "ratings"}))))).await,
        (401, "Audiences in Jwt are not allowed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_delimited_claims_are_matched_word_by_word() {
    let issuer = Issuer::new("test");
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let require = |claim: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: require-editor\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  rules:\n  - when:\n    - key: request.auth.claims[{claim}]\n      values: [editor]\n")
    };
    let token = issuer.token(claims(
        json!({"roles": "viewer editor", "provider": {"login": {"roles": "viewer editor"}}}),
    ));
    let status = |yaml: String| {
        let (app, token) = (&app, &token);
        async move {
            let (_server, http) = sidecar(app, &yaml).await;
            let auth = bearer(token);
            http.get("reviews:9080", "/", &[("authorization", &auth)])
                .await
                .status
                .as_u16()
        }
    };
    // Without spaceDelimitedClaims, a claim other than scope and permission is one string.
    let plain = request_authentication(&inline(&issuer.jwks));
    assert_eq!(status(plain.clone() + &require("roles")).await, 403);
    let listed = request_authentication(&format!(
        "{}\n    spaceDelimitedClaims: [roles, provider.login.roles]",
        inline(&issuer.jwks)
    ));
    assert_eq!(status(listed.clone() + &require("roles")).await, 200);
    assert_eq!(
        status(listed + &require("provider][login][roles")).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_required_refuses_a_request_without_a_token() {
    let issuer = Issuer::new("test");
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let yaml = request_authentication(&format!("{}\n    presence: REQUIRED", inline(&issuer.jwks)));
    let (_server, http) = sidecar(&app, &yaml).await;
    let missing = http.get("reviews:9080", "/", &[]).await;
    assert_eq!(
        (missing.status.as_u16(), missing.text()),
        (401, "Jwt is missing".into())
    );
    let auth = bearer(&issuer.token(claims(json!({}))));
    let with = http
        .get("reviews:9080", "/", &[("authorization", &auth)])
        .await;
    assert_eq!(with.status.as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_jwks_uri_and_istios_token_locations_and_headers() {
    let issuer = Issuer::new("test");
    let (keys, fetched) = jwks_server(issuer.jwks.clone()).await;
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let rule = format!(
        "    jwksUri: http://{}/jwks.json\n    fromHeaders:\n    - name: x-jwt-assertion\n    fromParams: [token]\n    forwardOriginalToken: true\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - header: x-jwt-sub\n      claim: sub",
        keys
    );
    let (_server, http) = sidecar(&app, &request_authentication(&rule)).await;
    let token = issuer.token(claims(json!({})));
    let a = http
        .get("reviews:9080", "/", &[("x-jwt-assertion", &token)])
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    {
        let seen = app.seen.lock().unwrap();
        let headers = &seen.last().unwrap().headers;
        assert_eq!(
            headers["x-jwt-assertion"],
            token.as_str(),
            "forwarded as it came"
        );
        assert_eq!(headers["x-jwt-sub"], ISSUER);
        assert_eq!(headers["x-jwt-payload"], token.split('.').nth(1).unwrap());
    }
    let a = http
        .get(
            "reviews:9080",
            &format!("/?token={}", issuer.token(claims(json!({"exp": 1})))),
            &[],
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text()),
        (401, "Jwt is expired".into())
    );
    // Fetched once and kept.
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A bearer token is not looked for where the rule names other places.
    let a = http
        .get("reviews:9080", "/", &[("authorization", "Bearer deadbeef")])
        .await;
    assert_eq!(a.status, 200);
}
