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
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{json, Value};
    use tower_test::mock::{pair, Handle};

    type Mock = Handle<Request<Body>, Response<Body>>;

    fn client() -> (Client, Mock) {
        let (service, handle) = pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    /// The next request, with its body as JSON (null when it has none).
    async fn next(
        mock: &mut Mock,
    ) -> (
        Method,
        String,
        Value,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        let (request, respond) = mock.next_request().await.expect("a request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path_and_query().unwrap().to_string();
        (parts.method, path, body, respond)
    }

    fn answer(code: StatusCode, body: Value) -> Response<Body> {
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn not_found() -> Response<Body> {
        answer(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases";

    fn lease(holder: &str, renewed: &str, version: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NAMESPACE, "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 0}})
    }

    #[tokio::test]
    async fn a_free_lease_is_created_for_this_replica() {
        let (client, mut mock) = client();
        let leases = Api::<Lease>::namespaced(client, NAMESPACE);
        let contending =
            tokio::spawn(async move { contend(&leases, "istiod-a", Timing::default()).await });
        let (method, path, _, respond) = next(&mut mock).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::GET, &*format!("{LEASE_PATH}/{LEASE}"))
        );
        respond.send_response(not_found());
        let (method, path, body, respond) = next(&mut mock).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::POST, &*format!("{LEASE_PATH}?"))
        );
        assert_eq!(body["metadata"]["name"], LEASE);
        assert_eq!(body["spec"]["holderIdentity"], "istiod-a");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        respond.send_response(answer(StatusCode::CREATED, body));
        assert!(contending.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn a_held_lease_is_left_alone_and_a_lapsed_one_taken_over_by_its_version() {
        let now = Timestamp::now();
        let (client, mut mock) = client();
        let leases = Api::<Lease>::namespaced(client, NAMESPACE);
        let held = leases.clone();
        let contending =
            tokio::spawn(async move { contend(&held, "istiod-b", Timing::default()).await });
        let (_, _, _, respond) = next(&mut mock).await;
        respond.send_response(answer(
            StatusCode::OK,
            lease("istiod-a", &now.to_string(), "7"),
        ));
        // Another replica holds it and renewed it just now: no write.
        assert!(!contending.await.unwrap().unwrap());

        let lapsed = (now - SignedDuration::from_secs(60)).to_string();
        let contending =
            tokio::spawn(async move { contend(&leases, "istiod-b", Timing::default()).await });
        let (_, _, _, respond) = next(&mut mock).await;
        respond.send_response(answer(StatusCode::OK, lease("istiod-a", &lapsed, "8")));
        let (method, path, body, respond) = next(&mut mock).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::PUT, &*format!("{LEASE_PATH}/{LEASE}?"))
        );
        // The update names the version it read, so a racing replica's fails.
        assert_eq!(body["metadata"]["resourceVersion"], "8");
        assert_eq!(body["spec"]["holderIdentity"], "istiod-b");
        assert_eq!(body["spec"]["leaseTransitions"], 1);
        respond.send_response(answer(
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
        ));
        // Another replica won the race: not held, and no error.
        assert!(!contending.await.unwrap().unwrap());
    }
}
