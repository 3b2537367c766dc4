//! Label selectors: the conversion of an arbitrary LabelSelector either reports errors or
//! yields a selector that matches exactly what Kubernetes' semantics say (checked against
//! a reference written here from the API documentation).
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use enforcer::manifests::convert::label_selector_from;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    match_labels: Option<Vec<(String, String)>>,
    expressions: Option<Vec<(String, Op, Option<Vec<String>>)>>,
    labels: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Other(String),
}

impl Op {
    fn name(&self) -> &str {
        match self {
            Op::In => "In",
            Op::NotIn => "NotIn",
            Op::Exists => "Exists",
            Op::DoesNotExist => "DoesNotExist",
            Op::Other(s) => s,
        }
    }
}

/// The documented semantics: every matchLabels pair present, every requirement holds.
fn reference(sel: &meta::LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|r| {
        let values = r.values.clone().unwrap_or_default();
        let v = labels.get(&r.key);
        match r.operator.as_str() {
            "In" => v.is_some_and(|v| values.contains(v)),
            "NotIn" => v.is_none_or(|v| !values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => unreachable!("an invalid operator was accepted: {:?}", r.operator),
        }
    });
    labels_ok && exprs_ok
}

fuzz_target!(|input: Input| {
    let sel = meta::LabelSelector {
        match_labels: input.match_labels.map(|l| l.into_iter().collect()),
        match_expressions: input.expressions.map(|e| {
            e.into_iter()
                .map(|(key, op, values)| meta::LabelSelectorRequirement {
                    key,
                    operator: op.name().to_string(),
                    values,
                })
                .collect()
        }),
    };
    let mut errors = Vec::new();
    let converted = label_selector_from(Some(&sel), "spec.podSelector", &mut errors);
    for e in &errors {
        assert!(e.field.starts_with("spec.podSelector."), "{e}");
    }
    if !errors.is_empty() {
        return;
    }
    let labels: BTreeMap<String, String> = input.labels.into_iter().collect();
    assert_eq!(
        converted.matches(&labels),
        reference(&sel, &labels),
        "{sel:?} on {labels:?}"
    );
});
