//! The CA's check of a service account token on Kubernetes, as istiod's: a TokenReview for
//! the `istio-ca` audience, whose user `system:serviceaccount:NS:SA` is who the proxy is.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// The audience injected pods' projected tokens are made for.
pub const AUDIENCE: &str = "istio-ca";

pub struct KubeTokenReview {
    client: Client,
}

impl KubeTokenReview {
    pub fn new(client: Client) -> KubeTokenReview {
        KubeTokenReview { client }
    }
}

impl weft_control::TokenAuthority for KubeTokenReview {
    fn review<'a>(&'a self, token: &'a str) -> weft_control::Review<'a> {
        Box::pin(self.reviewed(token))
    }
}

impl KubeTokenReview {
    async fn reviewed(&self, token: &str) -> Result<(String, String), String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("the API server's TokenReview failed: {e}"))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(status
                .error
                .unwrap_or_else(|| "the API server does not authenticate it".into()));
        }
        if !status
            .audiences
            .as_ref()
            .is_none_or(|a| a.iter().any(|a| a == AUDIENCE))
        {
            return Err(format!("the token is not for the {AUDIENCE} audience"));
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        service_account(&user).ok_or_else(|| {
            format!("{user:?} is not a service account (system:serviceaccount:NS:SA)")
        })
    }
}

/// `system:serviceaccount:NS:SA` as (NS, SA).
fn service_account(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| (namespace.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_service_accounts_are_identities() {
        assert_eq!(
            super::service_account("system:serviceaccount:default:bookinfo-reviews"),
            Some(("default".into(), "bookinfo-reviews".into()))
        );
        for user in [
            "admin",
            "system:serviceaccount:default",
            "system:serviceaccount::x",
            "system:node:n1",
        ] {
            assert_eq!(super::service_account(user), None, "{user}");
        }
    }
}
