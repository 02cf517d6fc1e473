//! The control plane's writes to the cluster, by one replica at a time: the holder of a
//! Lease (`istio-system/istio-leader`) puts the mesh root in every namespace's
//! `istio-ca-root-cert` ConfigMap (which injected pods mount, as istiod's namespace
//! controller does) and into the injection webhook's caBundle, and reports on each Istio
//! object Weft rejects in its `status.validationMessages`, as istiod's status writer does.
//! Serving discovery and certificates never waits on this: every replica serves.

use crate::manifest::{NAMESPACE, WEBHOOK_CONFIGURATION};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::time::Duration;

pub const LEASE: &str = "istio-leader";
/// What injected pods mount the mesh root from.
pub const ROOT_CONFIG_MAP: &str = "istio-ca-root-cert";
const ROOT_KEY: &str = "root-cert.pem";

/// How long a lease holds without renewal, and how often it is renewed and the writes
/// are checked (client-go's defaults are 15 s and 2 s).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease: Duration,
    pub renew: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            lease: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// The control plane's partitions that do not load, with their errors.
pub type Problems = Box<dyn Fn() -> BTreeMap<std::path::PathBuf, String> + Send + Sync>;
/// The cluster's namespaces, as the watches know them.
pub type Namespaces = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// Contends for the lease as `identity` and, while holding it, keeps the writes done.
pub async fn run(
    client: Client,
    identity: String,
    root_pem: String,
    namespaces: Namespaces,
    problems: Problems,
    timing: Timing,
) {
    let leases = Api::<Lease>::namespaced(client.clone(), NAMESPACE);
    let mut leading = false;
    let mut reported = BTreeMap::new();
    loop {
        let holds = match contend(&leases, &identity, timing).await {
            Ok(holds) => holds,
            Err(e) => {
                tracing::warn!("leader election: {e}; trying again");
                false
            }
        };
        if holds != leading {
            tracing::info!(%identity, "{} the lease {NAMESPACE}/{LEASE}", if holds { "holding" } else { "not holding" });
            leading = holds;
        }
        if holds {
            if let Err(e) = write(&client, &namespaces(), &root_pem).await {
                tracing::warn!("writing the mesh root to the cluster: {e}");
            }
            if let Err(e) = report(&client, &problems(), &mut reported).await {
                tracing::warn!("writing Istio objects' status: {e}");
            }
        } else {
            // Whoever holds the lease now reports what it finds.
            reported.clear();
        }
        tokio::time::sleep(timing.renew).await;
    }
}

/// Takes the lease if it is free or lapsed, renews it if held; whether `identity` holds
/// it now. A racing replica's write fails on the resourceVersion, so only one wins.
async fn contend(leases: &Api<Lease>, identity: &str, timing: Timing) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let seconds = i32::try_from(timing.lease.as_secs()).unwrap_or(i32::MAX);
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time: acquired.or_else(|| Some(now.clone())),
        renew_time: Some(now.clone()),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let current = match leases.get_opt(LEASE).await? {
        Some(lease) => lease,
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.into()),
                    namespace: Some(NAMESPACE.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(0, None)),
            };
            return match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
    };
    let held = current.spec.clone().unwrap_or_default();
    let mine = held.holder_identity.as_deref() == Some(identity);
    let lapsed = held.renew_time.as_ref().is_none_or(|renewed| {
        let lasts = held.lease_duration_seconds.unwrap_or(seconds);
        renewed.0 + SignedDuration::from_secs(lasts.into()) < now.0
    });
    if !mine && !lapsed {
        return Ok(false);
    }
    let transitions = held.lease_transitions.unwrap_or(0) + i32::from(!mine);
    let acquired = if mine { held.acquire_time } else { None };
    let renewed = Lease {
        metadata: current.metadata.clone(),
        spec: Some(spec(transitions, acquired)),
    };
    match leases
        .replace(LEASE, &PostParams::default(), &renewed)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Each rejected Istio object's `status.validationMessages` (Istio's IST0106, with the
/// loader's errors), written when they change and cleared once it loads.
async fn report(
    client: &Client,
    broken: &BTreeMap<std::path::PathBuf, String>,
    reported: &mut BTreeMap<std::path::PathBuf, String>,
) -> Result<(), kube::Error> {
    let status = |errors: Option<&String>| {
        let messages = errors.map(|e| {
            serde_json::json!([{"level": "ERROR",
                "type": {"code": "IST0106", "name": "SchemaValidationError"},
                "description": e}])
        });
        serde_json::json!({"status": {"validationMessages": messages}})
    };
    let changed: Vec<(std::path::PathBuf, Option<String>)> = broken
        .iter()
        .filter(|(p, e)| reported.get(*p) != Some(*e))
        .map(|(p, e)| (p.clone(), Some(e.clone())))
        .chain(
            reported
                .keys()
                .filter(|p| !broken.contains_key(*p))
                .map(|p| (p.clone(), None)),
        )
        .collect();
    for (partition, errors) in changed {
        let Some((kind, namespace, name)) = crate::cluster::index::istio_object(&partition) else {
            continue;
        };
        let resource = kube::api::ApiResource {
            group: kind.group.into(),
            version: kind.version.into(),
            api_version: format!("{}/{}", kind.group, kind.version),
            kind: kind.kind.into(),
            plural: kind.plural.into(),
        };
        let api =
            Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
        let patch = kube::api::Patch::Merge(status(errors.as_ref()));
        match api.patch_status(&name, &Default::default(), &patch).await {
            // Gone meanwhile: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        match errors {
            Some(e) => reported.insert(partition, e),
            None => reported.remove(&partition),
        };
    }
    Ok(())
}

/// The root in every namespace's ConfigMap and in the webhook's caBundle, where it is not
/// already.
async fn write(client: &Client, namespaces: &[String], root_pem: &str) -> Result<(), kube::Error> {
    for name in namespaces {
        let maps = Api::<ConfigMap>::namespaced(client.clone(), name);
        let wanted = BTreeMap::from([(ROOT_KEY.to_string(), root_pem.to_string())]);
        match maps.get_opt(ROOT_CONFIG_MAP).await? {
            Some(map) if map.data.as_ref() == Some(&wanted) => {}
            Some(mut map) => {
                map.data = Some(wanted);
                maps.replace(ROOT_CONFIG_MAP, &PostParams::default(), &map)
                    .await?;
            }
            None => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CONFIG_MAP.into()),
                        namespace: Some(name.clone()),
                        labels: Some(BTreeMap::from([(
                            "istio.io/config".to_string(),
                            "true".to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(wanted),
                    ..ConfigMap::default()
                };
                maps.create(&PostParams::default(), &map).await?;
            }
        }
    }
    let webhooks = Api::<MutatingWebhookConfiguration>::all(client.clone());
    if let Some(mut config) = webhooks.get_opt(WEBHOOK_CONFIGURATION).await? {
        let bundle = k8s_openapi::ByteString(root_pem.as_bytes().to_vec());
        let mut changed = false;
        for webhook in config.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                webhook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            webhooks
                .replace(WEBHOOK_CONFIGURATION, &PostParams::default(), &config)
                .await?;
            tracing::info!("the injection webhook's caBundle is now the mesh root");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{self, failure, finish, next, not_found};
    use http::{Method, StatusCode};
    use serde_json::{json, Value};

    const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases";

    fn lease(holder: &str, renewed: &str, version: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NAMESPACE, "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 0}})
    }

    #[tokio::test]
    async fn a_free_lease_is_created_for_this_replica() {
        let (client, mut mock) = mock::client();
        let leases = Api::<Lease>::namespaced(client, NAMESPACE);
        let contending =
            tokio::spawn(async move { contend(&leases, "istiod-a", Timing::default()).await });
        let sent = next(&mut mock).await;
        assert_eq!(
            (&sent.method, sent.uri.as_str()),
            (&Method::GET, &*format!("{LEASE_PATH}/{LEASE}"))
        );
        sent.respond(not_found());
        let sent = next(&mut mock).await;
        assert_eq!(
            (&sent.method, sent.uri.as_str()),
            (&Method::POST, &*format!("{LEASE_PATH}?"))
        );
        let body = sent.body.clone();
        assert_eq!(body["metadata"]["name"], LEASE);
        assert_eq!(body["spec"]["holderIdentity"], "istiod-a");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        sent.respond(mock::answer(StatusCode::CREATED, body));
        assert!(finish(contending, &mut mock).await.unwrap());
    }

    #[tokio::test]
    async fn a_held_lease_is_left_alone_and_a_lapsed_one_taken_over_by_its_version() {
        let now = Timestamp::now();
        let (client, mut mock) = mock::client();
        let leases = Api::<Lease>::namespaced(client, NAMESPACE);
        let held = leases.clone();
        let contending =
            tokio::spawn(async move { contend(&held, "istiod-b", Timing::default()).await });
        next(&mut mock)
            .await
            .ok(lease("istiod-a", &now.to_string(), "7"));
        // Another replica holds it and renewed it just now: no write.
        assert!(!finish(contending, &mut mock).await.unwrap());

        let lapsed = (now - SignedDuration::from_secs(60)).to_string();
        let contending =
            tokio::spawn(async move { contend(&leases, "istiod-b", Timing::default()).await });
        next(&mut mock).await.ok(lease("istiod-a", &lapsed, "8"));
        let sent = next(&mut mock).await;
        assert_eq!(
            (&sent.method, sent.uri.as_str()),
            (&Method::PUT, &*format!("{LEASE_PATH}/{LEASE}?"))
        );
        // The update names the version it read, so a racing replica's fails.
        assert_eq!(sent.body["metadata"]["resourceVersion"], "8");
        assert_eq!(sent.body["spec"]["holderIdentity"], "istiod-b");
        assert_eq!(sent.body["spec"]["leaseTransitions"], 1);
        sent.respond(failure(StatusCode::CONFLICT, "Conflict"));
        // Another replica won the race: not held, and no error.
        assert!(!finish(contending, &mut mock).await.unwrap());
    }

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nmesh root\n-----END CERTIFICATE-----\n";

    fn root_map(namespace: &str, pem: &str, version: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIG_MAP, "namespace": namespace, "resourceVersion": version,
                "labels": {"istio.io/config": "true"}},
            "data": {ROOT_KEY: pem}})
    }

    #[tokio::test]
    async fn the_mesh_root_is_created_updated_or_left_in_each_namespace_and_put_in_the_ca_bundle() {
        let (client, mut mock) = mock::client();
        let namespaces = ["bookinfo", "stale", "current"].map(String::from);
        let writing = tokio::spawn(async move { write(&client, &namespaces, ROOT).await });
        let maps = |ns: &str| format!("/api/v1/namespaces/{ns}/configmaps");

        // None yet: created, labelled as istiod labels it.
        let sent = next(&mut mock).await;
        assert_eq!(
            (&sent.method, sent.uri.as_str()),
            (
                &Method::GET,
                &*format!("{}/{ROOT_CONFIG_MAP}", maps("bookinfo"))
            )
        );
        sent.respond(not_found());
        let sent = next(&mut mock).await;
        assert_eq!(sent.line(), format!("POST {}?", maps("bookinfo")));
        assert_eq!(sent.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            sent.body,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CONFIG_MAP, "namespace": "bookinfo",
                    "labels": {"istio.io/config": "true"}},
                "data": {ROOT_KEY: ROOT}})
        );
        let created = sent.body.clone();
        sent.respond(mock::answer(StatusCode::CREATED, created));

        // An old root: replaced at the version read, keeping the rest of the map.
        let sent = next(&mut mock).await;
        assert_eq!(
            sent.line(),
            format!("GET {}/{ROOT_CONFIG_MAP}", maps("stale"))
        );
        sent.ok(root_map("stale", "old root", "41"));
        let sent = next(&mut mock).await;
        assert_eq!(
            sent.line(),
            format!("PUT {}/{ROOT_CONFIG_MAP}?", maps("stale"))
        );
        assert_eq!(sent.body, root_map("stale", ROOT, "41"));
        let replaced = sent.body.clone();
        sent.ok(replaced);

        // Already the root: no write.
        let sent = next(&mut mock).await;
        assert_eq!(
            sent.line(),
            format!("GET {}/{ROOT_CONFIG_MAP}", maps("current"))
        );
        sent.ok(root_map("current", ROOT, "42"));

        // The webhook's caBundle, in every webhook of the configuration, at its version.
        let webhooks = format!(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}"
        );
        let sent = next(&mut mock).await;
        assert_eq!(sent.line(), format!("GET {webhooks}"));
        let webhook = |name: &str, bundle: Option<&str>| {
            let mut w = json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"service": {"name": "istiod", "namespace": NAMESPACE, "path": "/inject", "port": 443}}});
            if let Some(b) = bundle {
                w["clientConfig"]["caBundle"] = json!(b);
            }
            w
        };
        let config = |bundles: [Option<&str>; 2]| {
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": WEBHOOK_CONFIGURATION, "resourceVersion": "9"},
                "webhooks": [webhook("rev.namespace.sidecar-injector.istio.io", bundles[0]),
                    webhook("namespace.sidecar-injector.istio.io", bundles[1])]})
        };
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(ROOT);
        sent.ok(config([None, Some("b2xk")]));
        let sent = next(&mut mock).await;
        assert_eq!(sent.line(), format!("PUT {webhooks}?"));
        assert_eq!(sent.body, config([Some(&encoded), Some(&encoded)]));
        let replaced = sent.body.clone();
        sent.ok(replaced);
        finish(writing, &mut mock).await.unwrap();

        // Everywhere already: reads only.
        let (client, mut mock) = mock::client();
        let writing =
            tokio::spawn(async move { write(&client, &["current".to_string()], ROOT).await });
        next(&mut mock).await.ok(root_map("current", ROOT, "42"));
        let sent = next(&mut mock).await;
        assert_eq!(sent.line(), format!("GET {webhooks}"));
        sent.ok(config([Some(&encoded), Some(&encoded)]));
        finish(writing, &mut mock).await.unwrap();
    }

    #[tokio::test]
    async fn a_rejected_istio_objects_status_gets_istios_validation_message_until_it_loads() {
        type Reports = BTreeMap<std::path::PathBuf, String>;
        let (client, mut mock) = mock::client();
        let reporting = |broken: Reports, mut reported: Reports| {
            let client = client.clone();
            tokio::spawn(async move {
                report(&client, &broken, &mut reported)
                    .await
                    .map(|()| reported)
            })
        };
        let partition = crate::cluster::index::partition(
            "networking.istio.io/VirtualService",
            "bookinfo",
            "reviews",
        );
        let status =
            "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/reviews/status?";
        let broken = Reports::from([(partition, "spec.http[0]: no route".to_string())]);
        let task = reporting(broken.clone(), Reports::new());
        let sent = next(&mut mock).await;
        assert_eq!(sent.line(), format!("PATCH {status}"));
        assert_eq!(
            sent.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            sent.body,
            json!({"status": {"validationMessages": [{"level": "ERROR",
                "type": {"code": "IST0106", "name": "SchemaValidationError"},
                "description": "spec.http[0]: no route"}]}})
        );
        sent.ok(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo"}}),
        );
        let reported = finish(task, &mut mock).await.unwrap();
        assert_eq!(reported, broken);

        // Reported already: nothing written again.
        let task = reporting(broken.clone(), reported);
        let reported = finish(task, &mut mock).await.unwrap();

        // It loads now: the message is cleared.
        let task = reporting(Reports::new(), reported);
        let sent = next(&mut mock).await;
        assert_eq!(sent.line(), format!("PATCH {status}"));
        assert_eq!(sent.body, json!({"status": {"validationMessages": null}}));
        sent.respond(not_found());
        // Deleted meanwhile: nothing to report on, and nothing left to clear.
        assert!(finish(task, &mut mock).await.unwrap().is_empty());
    }
}
