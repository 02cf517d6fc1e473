//! End-to-end tests of `weft analyze`: the real binary on Istio's Bookinfo samples (read from
//! `../shared/istio-samples` beside the checkout; missing files fail the test) and on small
//! fixtures written to a temporary directory.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const BOOKINFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio-samples/bookinfo"
);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

fn analyze<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    analyze_with_env(args, ("WEFT_LOG", "info"))
}

fn analyze_with_env<I, S>(args: I, env: (&str, &str)) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(WEFT)
        .arg("analyze")
        .args(args)
        .env(env.0, env.1)
        .output()
        .expect("run weft analyze");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

/// `-f` for each of Bookinfo's networking samples in name order (as the shell expands
/// `networking/*.yaml`), then `platform/bookinfo.yaml`.
fn bookinfo_args() -> Vec<PathBuf> {
    let dir = Path::new(BOOKINFO).join("networking");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read the Istio samples at {}: {e}\nthese tests need istio-samples checked out at ../shared beside the repository",
                dir.display()
            )
        })
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected Bookinfo's networking samples in {}, found {files:?}",
        dir.display()
    );
    let platform = Path::new(BOOKINFO).join("platform/bookinfo.yaml");
    assert!(platform.is_file(), "missing {}", platform.display());
    files.push(platform);
    files
        .into_iter()
        .flat_map(|f| [PathBuf::from("-f"), f])
        .collect()
}

/// What Istio's semantics give for all of Bookinfo's networking samples applied in name order
/// over the platform manifest:
///
/// - Documents with the same kind, namespace and name are one object: each later file
///   replaces it (kubectl apply, and istioctl's file source, keep the last). So the
///   VirtualServices in virtual-service-reviews-jason-v2-v3.yaml and -test-v2.yaml are both
///   `default/reviews`, one resource, and there is no IST0109; virtual-service-reviews-v3.yaml
///   is the `reviews` that remains. WEFT0003 names every such redefinition.
/// - The last `details` VirtualService (virtual-service-details-v2.yaml) routes to subset v2,
///   but the last `details` DestinationRule (fault-injection-details-v1.yaml) defines only
///   v1: IST0101.
/// - Subsets select the pods of the platform's Deployments (istioctl's file analysis makes a
///   pod from each Deployment's template): only ratings-v1 runs, so ratings' v2, v2-mysql and
///   v2-mysql-vm select nothing: IST0173 (an Error, as istio.io documents it).
/// - cert-manager's VirtualService lives in istio-system, so it shows only with -A.
const BOOKINFO_DEFAULT: [&str; 11] = [
    r#"Error [IST0101] (VirtualService default/details) Referenced host+subset in destinationrule not found: "details+v2""#,
    "Error [IST0173] (DestinationRule default/ratings) The Subset v2 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
    "Error [IST0173] (DestinationRule default/ratings) The Subset v2-mysql defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
    "Error [IST0173] (DestinationRule default/ratings) The Subset v2-mysql-vm defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
    "Warning [WEFT0003] (DestinationRule default/details) defined 3 times in the input; the last definition (fault-injection-details-v1.yaml, document 2) replaces the others, as with kubectl apply",
    "Warning [WEFT0003] (DestinationRule default/productpage) defined 2 times in the input; the last definition (destination-rule-all.yaml, document 1) replaces the others, as with kubectl apply",
    "Warning [WEFT0003] (DestinationRule default/ratings) defined 2 times in the input; the last definition (destination-rule-all.yaml, document 3) replaces the others, as with kubectl apply",
    "Warning [WEFT0003] (DestinationRule default/reviews) defined 3 times in the input; the last definition (destination-rule-reviews.yaml, document 1) replaces the others, as with kubectl apply",
    "Warning [WEFT0003] (VirtualService default/details) defined 3 times in the input; the last definition (virtual-service-details-v2.yaml, document 1) replaces the others, as with kubectl apply",
    "Warning [WEFT0003] (VirtualService default/ratings) defined 6 times in the input; the last definition (virtual-service-ratings-test-delay.yaml, document 1) replaces the others, as with kubectl apply",
    "Warning [WEFT0003] (VirtualService default/reviews) defined 11 times in the input; the last definition (virtual-service-reviews-v3.yaml, document 1) replaces the others, as with kubectl apply",
];

#[test]
fn bookinfo_samples_together() {
    let run = analyze(bookinfo_args());
    assert_eq!(run.lines(), BOOKINFO_DEFAULT, "stderr: {}", run.stderr);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("Analyzers found issues when analyzing namespace: default."),
        "{}",
        run.stderr
    );

    let mut all = vec![PathBuf::from("--all-namespaces")];
    all.extend(bookinfo_args());
    let run = analyze(all);
    let mut expected = BOOKINFO_DEFAULT.to_vec();
    expected.insert(
        1,
        r#"Error [IST0101] (VirtualService istio-system/cert-manager) Referenced host not found: "cert-manager-resolver""#,
    );
    assert_eq!(run.lines(), expected, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("analyzing all namespaces."));
}

#[test]
fn bookinfo_platform_alone_is_clean() {
    let platform = Path::new(BOOKINFO).join("platform/bookinfo.yaml");
    assert!(platform.is_file(), "missing {}", platform.display());
    let run = analyze([Path::new("-f"), &platform]);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "✔ No validation issues found when analyzing namespace: default.\n"
    );
    assert_eq!(run.code, Some(0));
}

const REVIEWS: &str = "apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
";

fn vs_to(subset: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"
    )
}

/// Writes `yaml` to a file in a fresh temporary directory.
fn fixture(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, yaml).expect("write fixture");
    (dir, file)
}

#[test]
fn a_missing_subset_is_reported_as_istioctl_reports_it() {
    let (_dir, file) = fixture(&format!("{REVIEWS}{}", vs_to("v4")));
    let run = analyze([Path::new("-f"), &file]);
    assert_eq!(
        run.stdout,
        "Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v4\"\n"
    );
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);

    let run = analyze([Path::new("-o"), Path::new("json"), Path::new("-f"), &file]);
    let json: Value = serde_json::from_str(&run.stdout).expect("json output");
    assert_eq!(json[0]["code"], "IST0101");
    assert_eq!(json[0]["origin"], "VirtualService default/reviews");
    assert_eq!(
        json[0]["reference"],
        format!("{}:{}", file.display(), 20).as_str()
    );
    assert_eq!(json.as_array().map(Vec::len), Some(1));
    assert_eq!(run.code, Some(1));

    // Another namespace has nothing to report.
    let run = analyze([Path::new("-n"), Path::new("prod"), Path::new("-f"), &file]);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "✔ No validation issues found when analyzing namespace: prod.\n"
    );
    assert_eq!(run.code, Some(0));
}

#[test]
fn a_clean_fixture_passes() {
    let (dir, _file) = fixture(&format!("{REVIEWS}{}", vs_to("v2")));
    let run = analyze([Path::new("-f"), dir.path()]);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "✔ No validation issues found when analyzing namespace: default.\n"
    );
    assert_eq!(run.code, Some(0));

    let run = analyze([
        Path::new("-o"),
        Path::new("yaml"),
        Path::new("-f"),
        dir.path(),
    ]);
    assert_eq!(run.stdout, "[]\n");
    assert_eq!(run.code, Some(0));
}

#[test]
fn without_files_it_reads_the_control_plane_and_says_so_when_none_answers() {
    let run = analyze_with_env(Vec::<&str>::new(), ("WEFT_CONTROL_PLANE", "127.0.0.1:1"));
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("weft analyze without -f reads the live config from the control plane")
            && run.stderr.contains("start it with `weft control`"),
        "{}",
        run.stderr
    );
}
