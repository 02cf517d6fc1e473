//! The control-plane load tool against an in-process control plane and a small generated
//! mesh: its numbers must describe what really happened.

use std::time::Duration;
use weft_bench::control_plane::{self, mesh_gen, Options};
use weft_control::{ControlOptions, ControlPlane};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_syncs_and_each_change_reaches_exactly_its_namespace() {
    let opts = Options {
        mesh: mesh_gen::MeshSpec {
            services: 20,
            endpoints_per_service: 3,
            // One change per namespace: see the note on `changes`.
            namespaces: 5,
            sidecars: true,
        },
        proxies: 10,
        // A second API change to an object of the same multi-document file makes the
        // control plane cut the wrong document out of that file (bench/README.md, "Control
        // plane at scale"); the tool reports that as unexpected updates, which this test is
        // not about.
        changes: 5,
        seed: 7,
        timeout: Duration::from_secs(30),
        change_timeout: Duration::from_secs(30),
        patient: false,
        kubernetes: false,
    };
    let config = mesh_gen::generate(&opts.mesh).unwrap();
    let cp = ControlPlane::start(ControlOptions {
        grpc: Some("127.0.0.42:0".parse().unwrap()),
        monitoring: "127.0.0.42:0".parse().unwrap(),
        state_file: None,
        ..ControlOptions::new(config.path().to_path_buf())
    })
    .await
    .unwrap();
    let r = control_plane::measure(&opts, cp.grpc_addr.unwrap(), &cp.admin_token, None)
        .await
        .unwrap();

    assert_eq!(r.objects, 20 * 4 + 5);
    assert_eq!(r.snapshot.synced, 10);
    // A namespace's 4 services, their 12 endpoints and its Sidecar.
    assert_eq!(
        (r.snapshot.resources_min, r.snapshot.resources_max),
        (17, 17)
    );
    assert_eq!(r.snapshot.wrong_resource_count, 0);
    assert!(r.snapshot.seconds < 10.0, "{}", r.snapshot.seconds);
    assert!(r.snapshot.bytes > 0);
    assert_eq!(r.changes.samples.len(), 5);
    for s in &r.changes.samples {
        assert_eq!((s.affected, s.updated, s.outside), (2, 2, 0), "{s:?}");
        assert!(s.converged_ms.is_some_and(|ms| ms < 10_000.0), "{s:?}");
    }
    assert_eq!(r.changes.converged, 5);
    assert!(r.changes.convergence_ms.p50 <= r.changes.convergence_ms.max);
    assert!(r.mesh_wide_change_ms.is_some());
    assert!(r.unexpected.is_empty(), "{:?}", r.unexpected);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(
        r.control_plane.is_none(),
        "no process of its own to measure"
    );

    let md = control_plane::markdown(&r);
    assert!(md.contains("| proxies synced | 10 of 10 |"), "{md}");
}
