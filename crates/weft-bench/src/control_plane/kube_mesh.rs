//! The benchmark's mesh on Kubernetes: the same Services and endpoints, as a cluster would
//! hold them in the fake API server (a Namespace each, Services with selectors, a Pod per
//! endpoint, an EndpointSlice per Service, and the Sidecars with their CRD), and each
//! change an EndpointSlice update moving one endpoint to its new address.

use super::mesh_gen::{self, MeshSpec};
use crate::fake_apiserver::FakeApiServer;
use serde_json::{json, Value};

/// Puts the whole mesh into `fake`.
pub fn seed(fake: &FakeApiServer, spec: &MeshSpec) {
    if spec.sidecars {
        fake.put(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "sidecars.networking.istio.io"},
            "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                "names": {"plural": "sidecars", "kind": "Sidecar", "singular": "sidecar"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}));
    }
    for ns in 0..spec.namespaces {
        let namespace = mesh_gen::namespace(ns);
        fake.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
        if spec.sidecars {
            fake.put(
                json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                "metadata": {"name": "default", "namespace": namespace},
                "spec": {"egress": [{"hosts": ["./*", "istio-system/*"]}]}}),
            );
        }
    }
    for s in 0..spec.services {
        let namespace = mesh_gen::namespace(spec.namespace_of_service(s));
        fake.put(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{s}"), "namespace": namespace},
            "spec": {"selector": {"app": format!("svc-{s}")},
                "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}}));
        for e in 0..spec.endpoints_per_service {
            fake.put(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": mesh_gen::workload_entry_name(s, e), "namespace": namespace,
                    "labels": {"app": format!("svc-{s}"), "version": format!("v{}", 1 + e % 2)}},
                "spec": {"containers": []},
                "status": {"phase": "Running",
                    "podIP": mesh_gen::endpoint_address(s * spec.endpoints_per_service + e)}}));
        }
        fake.put(slice(spec, s, None));
    }
}

/// Service `s`'s EndpointSlice, endpoint `moved.0` at address `moved.1` if given.
pub fn slice(spec: &MeshSpec, s: usize, moved: Option<(usize, &str)>) -> Value {
    let namespace = mesh_gen::namespace(spec.namespace_of_service(s));
    let endpoints: Vec<Value> = (0..spec.endpoints_per_service)
        .map(|e| {
            let address = match moved {
                Some((m, address)) if m == e => address.to_string(),
                _ => mesh_gen::endpoint_address(s * spec.endpoints_per_service + e),
            };
            json!({"addresses": [address], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "namespace": namespace,
                    "name": mesh_gen::workload_entry_name(s, e)}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{s}"), "namespace": namespace,
            "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints})
}

/// The mesh-wide Service, in istio-system.
pub fn barrier(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080}]}})
}
