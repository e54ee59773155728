//! critest v1.37, the CRI validation suite, against a real skiffd, offline.
//!
//! critest pulls its images by their public names (registry.k8s.io, gcr.io, k8s.gcr.io). They
//! are built from Debian packages by `skiff_tests::critest_images`, pushed to a local registry,
//! and skiffd's registry mirrors send those three hosts there. critest is built by
//! `scripts/gotools.sh`; its JSON report (ginkgo's) says which specs passed.
//!
//! critest binds host ports 12000-12003 (hostPort mappings, port-forwards, a host-network
//! nginx); no other test uses them. Its pods get UUID names on this test's own CNI network.
//!
//! `SKIFF_CRITEST_FOCUS=REGEX` runs only the matching specs (ginkgo's focus), to debug one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use skiff_tests::busybox::test_images_dir;
use skiff_tests::critest_images::push_critest_images;
use skiff_tests::daemon::{sibling_binary, unmount_below, Skiffd};
use skiff_tests::kube::gotool;
use skiff_tests::registry::Registry;

/// Specs that cannot pass on a machine without the internet, each with its reason. They are
/// skipped (`--ginkgo.skip`) rather than run to fail: skiffd would try the upstream registry
/// after the mirror, and this machine sends no traffic off it.
const OFFLINE: &[(&str, &str)] = &[(
    "[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]",
    // Pulls gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…: a manifest digest
    // is the hash of the upstream registry's bytes, which no image built here can have.
    "pulls by a digest only the upstream registry's image has",
)];

/// Specs critest skips by itself when the runtime or host lacks a feature, by the start of
/// their names, with the reason. They may pass once the feature comes; a spec skipped that is
/// not listed here fails this test.
const SKIPPED_BY_CRITEST: &[(&str, &str)] = &[
    (
        "[k8s.io] AppArmor ",
        "AppArmor is disabled on this host (no /sys/module/apparmor)",
    ),
    (
        "[k8s.io] NRI ",
        "skiff does not implement NRI, so critest gets no NRI socket",
    ),
    (
        "[k8s.io] Image Volume ",
        "skiff cannot mount an image as a volume (CreateContainer answers UNIMPLEMENTED)",
    ),
    (
        "[k8s.io] Security Context UserNamespaces ",
        "skiff does not support user namespaces: no runtime handler in Status says it does",
    ),
    (
        "[k8s.io] Security Context SupplementalGroupsPolicy ",
        "skiffd's Status does not advertise the SupplementalGroupsPolicy feature",
    ),
    (
        "[k8s.io] Container Mount Readonly ",
        "recursive read-only mounts: no runtime handler in Status advertises them",
    ),
    (
        "[k8s.io] PodSandbox runtime should support metrics operations ",
        "skiffd does not implement the CRI metrics RPCs (ListMetricDescriptors answers UNIMPLEMENTED)",
    ),
];

/// Parallel ginkgo processes. Specs mostly wait (polls every 4 s, timeouts, sleeps): on this
/// 2-core machine the suite took 69 s with one process, 30 s with two and 21 s with four.
/// Two, because `make test` runs other tests beside this one, and some specs time their
/// commands to a second (ExecSync timeouts).
const PARALLEL: u32 = 2;

/// A spec's outcome from ginkgo's JSON report.
#[derive(Debug)]
struct SpecResult {
    state: String,
    /// The failure or skip message, with its location.
    message: String,
}

#[test]
fn critest_passes_against_skiffd() {
    let critest = gotool("critest").unwrap();
    // critest -parallel runs the ginkgo CLI; gotools.sh builds it beside critest.
    gotool("ginkgo").unwrap();
    let registry = Registry::start().unwrap();
    let started = Instant::now();
    let nnp = sibling_binary("skiff-nnp", "SKIFF_NNP_BIN");
    let pushed = push_critest_images(&registry.addr(), &nnp, &test_images_dir().join("critest"))
        .expect("building and pushing critest's images");
    eprintln!(
        "built and pushed {} image names in {:.1?}",
        pushed.len(),
        started.elapsed()
    );

    let mirror = format!("mirrors = [\"http://{}\"]", registry.addr());
    let config: String = ["registry.k8s.io", "gcr.io", "k8s.gcr.io"]
        .iter()
        .map(|host| format!("[registry.hosts.\"{host}\"]\n{mirror}\n"))
        .collect();
    let daemon = Skiffd::start(&config).unwrap();

    let work = tempfile::Builder::new()
        .prefix("skiff-critest-")
        .tempdir()
        .unwrap();
    let focus = std::env::var("SKIFF_CRITEST_FOCUS").ok();
    let started = Instant::now();
    let run = run_critest(&critest, &daemon.socket, work.path(), focus.as_deref());
    let elapsed = started.elapsed();
    // Specs that failed half-way may leave mounts in their host paths (under TMPDIR = work).
    unmount_below(work.path());
    let (results, output) = run.unwrap();
    eprintln!("critest ran {} specs in {elapsed:.1?}", results.len());

    let mut failures = String::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, result) in &results {
        *counts.entry(result.state.as_str()).or_default() += 1;
        let offline = OFFLINE.iter().any(|(spec, _)| spec == name);
        let unsupported = SKIPPED_BY_CRITEST
            .iter()
            .any(|(prefix, _)| name.starts_with(prefix));
        // With a focus, ginkgo skips every other spec, without a message.
        let unfocused = focus.is_some() && result.message.is_empty();
        let ok = match result.state.as_str() {
            "passed" => !offline,
            "skipped" if unfocused => true,
            // Ours of the offline specs, critest's own of its benchmarks (it runs them only
            // with -benchmark) and of features skiff or this host lack.
            "skipped" => offline || unsupported || name.contains("benchmark"),
            _ => false,
        };
        if !ok {
            let _ = writeln!(failures, "- {name}: {}\n  {}", result.state, result.message);
        }
    }
    eprintln!("critest: {counts:?}");
    for (spec, reason) in OFFLINE {
        eprintln!("skipped offline: {spec}: {reason}");
    }
    for (prefix, reason) in SKIPPED_BY_CRITEST {
        let skipped = results
            .iter()
            .filter(|(name, r)| name.starts_with(prefix) && r.state == "skipped")
            .count();
        eprintln!("skipped by critest: {skipped} of {prefix}…: {reason}");
    }
    if focus.is_none() {
        for (spec, _) in OFFLINE {
            if !results.contains_key(*spec) {
                let _ = writeln!(
                    failures,
                    "- {spec}: listed as offline but not in the report"
                );
            }
        }
    }
    // skiffd's log is long (debug level); its warnings and errors usually explain a failure.
    let log = daemon.log();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        failures.is_empty(),
        "critest specs that did not pass:\n{failures}\n--- critest output (tail) ---\n{}\n\
         --- skiffd warnings and errors (last 40) ---\n{}",
        tail(&output, 40),
        tail(&problems.join("\n"), 40)
    );
}

/// Runs critest against `socket` with its files under `work`; returns each spec's result by
/// its full name, and critest's output.
fn run_critest(
    critest: &Path,
    socket: &Path,
    work: &Path,
    focus: Option<&str>,
) -> Result<(BTreeMap<String, SpecResult>, String)> {
    let report = work.join("report.json");
    let output = work.join("critest.log");
    // An empty client config, so that a host's /etc/crictl.yaml cannot interfere.
    let config = work.join("crictl.yaml");
    std::fs::write(&config, "")?;
    let endpoint = format!("unix://{}", socket.display());
    let skip: Vec<String> = OFFLINE.iter().map(|(spec, _)| regex_escape(spec)).collect();
    // With -parallel critest runs the `ginkgo` CLI, which gotools.sh builds beside it.
    let bin_dir = critest.parent().context("critest has a directory")?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = std::fs::File::create(&output)?;
    let mut command = Command::new(critest);
    command
        .arg(format!("-config={}", config.display()))
        .arg(format!("-runtime-endpoint={endpoint}"))
        .arg(format!("-image-endpoint={endpoint}"))
        // critest passes -parallel=1 on to `go test`, which ginkgo refuses: say it only above 1.
        .args((PARALLEL > 1).then(|| format!("-parallel={PARALLEL}")))
        .arg("-ginkgo.no-color")
        .arg(format!("-ginkgo.json-report={}", report.display()))
        .arg(format!("-ginkgo.skip={}", skip.join("|")))
        .args(focus.map(|f| format!("-ginkgo.focus={f}")))
        // Its temporary files (host paths of volumes, pod log dirs) go with `work`.
        .env("TMPDIR", work)
        .env("PATH", path)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let status = command
        .status()
        .with_context(|| format!("running {}", critest.display()))?;
    let output = std::fs::read_to_string(&output).unwrap_or_default();
    if !report.exists() {
        bail!("critest ({status}) wrote no report:\n{}", tail(&output, 80));
    }
    let results = parse_report(&std::fs::read(&report)?)?;
    Ok((results, output))
}

/// Each `It` of ginkgo's JSON report (`[{"SpecReports": [...]}]`), by its full name: the
/// texts of its containers and its own, joined with spaces, as ginkgo's focus and skip match.
fn parse_report(json: &[u8]) -> Result<BTreeMap<String, SpecResult>> {
    let suites: Vec<Value> = serde_json::from_slice(json).context("parsing critest's report")?;
    let mut results = BTreeMap::new();
    for spec in suites
        .iter()
        .flat_map(|s| s["SpecReports"].as_array().into_iter().flatten())
    {
        if spec["LeafNodeType"] != "It" {
            continue;
        }
        let mut texts: Vec<&str> = spec["ContainerHierarchyTexts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        texts.push(spec["LeafNodeText"].as_str().unwrap_or_default());
        let failure = &spec["Failure"];
        let location = &failure["Location"];
        let message = match failure["Message"].as_str() {
            Some(m) => format!(
                "{} ({}:{})",
                m.trim(),
                location["FileName"].as_str().unwrap_or("?"),
                location["LineNumber"]
            ),
            None => String::new(),
        };
        results.insert(
            texts.join(" "),
            SpecResult {
                state: spec["State"].as_str().unwrap_or("unknown").to_string(),
                message,
            },
        );
    }
    Ok(results)
}

/// `text` as a regular expression matching exactly it (Go's RE2 syntax).
fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn report_names_specs_as_ginkgo_matches_them() {
    let report = br#"[{"SpecReports": [
        {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[k8s.io] Image Manager"],
         "LeafNodeText": "pulls [Conformance]", "State": "failed",
         "Failure": {"Message": "boom\n", "Location": {"FileName": "image.go", "LineNumber": 7}}},
        {"LeafNodeType": "BeforeSuite", "State": "passed"}
    ]}]"#;
    let results = parse_report(report).unwrap();
    assert_eq!(results.len(), 1);
    let spec = &results["[k8s.io] Image Manager pulls [Conformance]"];
    assert_eq!(spec.state, "failed");
    assert_eq!(spec.message, "boom (image.go:7)");
    assert_eq!(regex_escape("[a] b.c"), r"\[a\] b\.c");
}
