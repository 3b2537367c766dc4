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
}
