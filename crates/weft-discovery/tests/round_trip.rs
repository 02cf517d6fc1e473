//! Every object in Istio's Bookinfo configs and its valid validation cases crosses the wire
//! unchanged: what the control plane encodes, a proxy decodes to the same spec.

use std::path::Path;
use weft_discovery::wire::{self, Key};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio-samples");

#[test]
fn istio_samples_survive_the_wire() {
    let mut checked = 0;
    for dir in ["bookinfo/networking", "bookinfo/platform"] {
        let path = Path::new(SAMPLES).join(dir);
        let loaded = weft_api::load_path(&path).unwrap_or_else(|e| {
            panic!("{e}: these tests need istio-samples at ../shared beside the repository")
        });
        for r in loaded.resources {
            let back = wire::decode(&wire::encode(&Key::of(&r), wire::to_json(&r)))
                .unwrap_or_else(|e| panic!("{}: {e}", r.display_name()));
            assert_eq!(back.spec, r.spec, "{}", r.display_name());
            assert_eq!(back.metadata.labels, r.metadata.labels);
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} objects");
}
