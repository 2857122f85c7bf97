//! The Prometheus alert rules in `contrib/prometheus`: valid, unit-tested on
//! synthetic series by promtool, and each one explained in the runbook.
//! (That every metric they name is one Keel exports is checked against a live
//! scrape in `tests/admin.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/prometheus")
        .join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The alert names, in file order.
fn alerts() -> Vec<String> {
    read(&contrib("keel-rules.yml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn every_alert_has_a_runbook_section_a_matching_link_and_a_unit_test() {
    let alerts = alerts();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let rules = read(&contrib("keel-rules.yml"));
    let tests = read(&contrib("keel-rules.test.yml"));
    let runbook = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md"));
    for alert in &alerts {
        assert!(
            runbook.lines().any(|l| l == format!("## {alert}")),
            "docs/runbook.md has no `## {alert}` section"
        );
        let link = format!("#{}\"", alert.to_lowercase());
        assert!(rules.contains(&link), "{alert}'s runbook_url is not {link}");
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels"
            )),
            "keel-rules.test.yml never sees {alert} fire"
        );
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let Ok(version) = Command::new("promtool").arg("--version").output() else {
        eprintln!("SKIPPED: promtool is not installed (scripts/up --test-tools installs it)");
        return;
    };
    assert!(version.status.success());
    for args in [
        vec!["check", "rules", "keel-rules.yml"],
        vec!["test", "rules", "keel-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(contrib(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
