//! The agent's metrics, rendered in the Prometheus text exposition format.
//!
//! Deliberately small: a fixed set of counters and gauges, some with labels, behind one
//! mutex (updates are rare compared to a scrape interval; the datapath counts in the kernel).

use std::{collections::BTreeMap, fmt::Write, sync::Mutex};

/// A metric family: name, help, type, and values by label set (rendered `k="v",...`).
#[derive(Default)]
struct Family {
    help: &'static str,
    kind: &'static str,
    values: BTreeMap<String, f64>,
}

#[derive(Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<F: FnOnce(&mut Family)>(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        f: F,
    ) {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            values: BTreeMap::new(),
        });
        f(fam);
    }

    /// Add `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], by: f64) {
        self.with(name, help, "counter", |f| {
            *f.values.entry(labels(l)).or_default() += by
        });
    }

    /// Set a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], v: f64) {
        self.with(name, help, "gauge", |f| {
            f.values.insert(labels(l), v);
        });
    }

    /// Set a counter to an absolute value read elsewhere (e.g. a kernel counter).
    pub fn set_counter(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], v: f64) {
        self.with(name, help, "counter", |f| {
            f.values.insert(labels(l), v);
        });
    }

    /// Current value (tests and status output).
    pub fn get(&self, name: &str, l: &[(&str, &str)]) -> Option<f64> {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        fams.get(name)
            .and_then(|f| f.values.get(&labels(l)).copied())
    }

    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (l, v) in &fam.values {
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc("enforcer_x_total", "Xs seen.", &[("verdict", "deny")], 1.0);
        m.inc("enforcer_x_total", "Xs seen.", &[("verdict", "deny")], 2.0);
        m.set("enforcer_ready", "Ready.", &[], 1.0);
        m.set("enforcer_q", "Q.", &[("name", "a\"b")], 0.5);
        let t = m.render();
        assert!(
            t.contains("# TYPE enforcer_x_total counter\nenforcer_x_total{verdict=\"deny\"} 3\n")
        );
        assert!(t.contains("enforcer_ready 1\n"));
        assert!(t.contains("enforcer_q{name=\"a\\\"b\"} 0.5\n"));
        assert_eq!(m.get("enforcer_x_total", &[("verdict", "deny")]), Some(3.0));
    }

    /// Metric names in `text`: `enforcer_` then lower-case letters, digits and `_`.
    fn names_in(text: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("enforcer_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            // Not the tail of a longer identifier (`foo_enforcer_x`).
            let preceded = rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !preceded {
                out.insert(tail[..end].trim_end_matches('_').to_string());
            }
            rest = &tail[end..];
        }
        out
    }

    /// The names the agent exports: string literals in its sources, outside test code
    /// (`#[cfg(test)]` modules, which come last in a file, and test files).
    fn exported() -> std::collections::BTreeSet<String> {
        fn walk(dir: &std::path::Path, out: &mut std::collections::BTreeSet<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if p.is_dir() {
                    if name != "tests" {
                        walk(&p, out);
                    }
                } else if name.ends_with(".rs") && name != "tests.rs" {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let code = text.split("#[cfg(test)]").next().unwrap_or("");
                    for lit in code.split('"').skip(1).step_by(2) {
                        if lit.starts_with("enforcer_") && names_in(lit).len() == 1 {
                            out.extend(names_in(lit));
                        }
                    }
                }
            }
        }
        let mut out = std::collections::BTreeSet::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut out,
        );
        out
    }

    #[test]
    fn the_catalog_matches_the_code_and_the_dashboard() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let catalog_text = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
        // The catalog's tables: the first cell of each row.
        let catalog: std::collections::BTreeSet<String> = catalog_text
            .lines()
            .filter_map(|l| l.strip_prefix("| `enforcer_"))
            .filter_map(|l| l.split('`').next())
            .map(|n| format!("enforcer_{n}"))
            .collect();
        let code = exported();
        assert!(code.len() > 40, "the scan found too little: {code:?}");
        let undocumented: Vec<_> = code.difference(&catalog).collect();
        let stale: Vec<_> = catalog.difference(&code).collect();
        assert!(
            undocumented.is_empty() && stale.is_empty(),
            "docs/metrics.md is out of date: exported but not listed {undocumented:?}; \
             listed but not exported {stale:?}"
        );
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("deploy/grafana/enforcer.json")).unwrap(),
        )
        .unwrap();
        let mut queried = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let targets = panel["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "panel {} queries nothing",
                panel["title"]
            );
            for t in targets {
                queried.extend(names_in(t["expr"].as_str().unwrap()));
            }
        }
        let unknown: Vec<_> = queried.difference(&catalog).collect();
        assert!(
            unknown.is_empty(),
            "the dashboard queries metrics that do not exist: {unknown:?}"
        );
        assert!(queried.len() >= 15, "{queried:?}");
    }
}
