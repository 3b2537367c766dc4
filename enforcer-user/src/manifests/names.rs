//! Kubernetes syntax rules for names, label keys, label values and port names.
//!
//! These mirror the apimachinery validation helpers (`IsDNS1123Label`,
//! `IsDNS1123Subdomain`, `IsQualifiedName`, `IsValidLabelValue`, `IsValidPortName`). Each
//! function returns `Err(reason)` with a sentence suitable for a field error.

/// Maximum length of a DNS-1123 label (namespace names, label name parts).
const DNS1123_LABEL_MAX: usize = 63;
/// Maximum length of a DNS-1123 subdomain (most object names, label key prefixes).
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Maximum length of the name part of a qualified name and of a label value.
const QUALIFIED_NAME_MAX: usize = 63;
/// Maximum length of an IANA service name (named ports).
const PORT_NAME_MAX: usize = 15;

const DNS1123_LABEL_FORMAT: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character \
    (e.g. 'my-name' or '123-abc')";
const DNS1123_SUBDOMAIN_FORMAT: &str = "a lowercase RFC 1123 subdomain must consist of lower \
    case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
    character (e.g. 'example.com')";
const QUALIFIED_NAME_FORMAT: &str = "must consist of alphanumeric characters, '-', '_' or \
    '.', and must start and end with an alphanumeric character (e.g. 'MyName', 'my.name' or \
    '123-abc')";
const LABEL_VALUE_FORMAT: &str = "a valid label value must be an empty string or consist of \
    alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
    character (e.g. 'MyValue', 'my_value' or '12345')";

/// One dot-free component of a DNS name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_component(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-')
        }
        _ => false,
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the shape of label name parts and values.
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A DNS-1123 label: namespace names.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns_component(s) {
        return Err(DNS1123_LABEL_FORMAT.to_string());
    }
    Ok(())
}

/// A DNS-1123 subdomain: names of pods, network policies and label key prefixes.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !s.split('.').all(is_dns_component) {
        return Err(DNS1123_SUBDOMAIN_FORMAT.to_string());
    }
    Ok(())
}

/// A qualified name, the syntax of label keys: an optional DNS subdomain prefix and `/`,
/// then a name of at most 63 characters.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        None => (None, s),
        Some((prefix, name)) => (Some(prefix), name),
    };
    if name.contains('/') {
        return Err(format!(
            "a qualified name {QUALIFIED_NAME_FORMAT}, with an optional DNS subdomain prefix \
             and '/' (e.g. 'example.com/MyName')"
        ));
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".to_string());
        }
        dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_string());
    }
    if name.len() > QUALIFIED_NAME_MAX {
        return Err(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !is_label_token(name) {
        return Err(format!("name part {QUALIFIED_NAME_FORMAT}"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the label token shape.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.len() > QUALIFIED_NAME_MAX {
        return Err(format!(
            "must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !s.is_empty() && !is_label_token(s) {
        return Err(LABEL_VALUE_FORMAT.to_string());
    }
    Ok(())
}

/// An IANA_SVC_NAME (RFC 6335), the syntax of named ports: 1-15 characters of lowercase
/// letters, digits and '-', with at least one letter, no leading or trailing '-' and no
/// "--".
pub fn port_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must be non-empty".to_string());
    }
    if s.len() > PORT_NAME_MAX {
        return Err(format!("must be no more than {PORT_NAME_MAX} characters"));
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(
            "must contain only lowercase alphanumeric characters (a-z, 0-9) and '-'".into(),
        );
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        return Err("must not contain consecutive hyphens ('--')".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not begin or end with a hyphen ('-')".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "default", "kube-system", "0abc", "a1-b2"] {
            assert_eq!(dns1123_label(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
        assert_eq!(dns1123_label(&"a".repeat(63)), Ok(()));
    }

    #[test]
    fn dns_subdomains() {
        for ok in ["a", "a.b", "allow-foo", "x.example.com", "0.1"] {
            assert_eq!(dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a_b",
            "Abc",
            "a.-b",
            &"a".repeat(254),
        ] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qualified_names() {
        for ok in [
            "app",
            "App_Name.x-1",
            "kubernetes.io/metadata.name",
            "example.com/MyName",
            "a",
        ] {
            assert_eq!(qualified_name(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", "name part must be non-empty"),
            ("/app", "prefix part must be non-empty"),
            ("a/b/c", "a qualified name"),
            ("Example.com/app", "prefix part"),
            ("example.com/", "name part must be non-empty"),
            ("-app", "name part must consist"),
            ("app.", "name part must consist"),
            ("my app", "name part must consist"),
        ];
        for (bad, why) in cases {
            let err = qualified_name(bad).expect_err(bad);
            assert!(err.starts_with(why), "{bad}: {err}");
        }
        let long = "a".repeat(64);
        assert!(
            qualified_name(&long)
                .unwrap_err()
                .contains("no more than 63")
        );
    }

    #[test]
    fn label_values() {
        for ok in ["", "v", "My_Value.1-2", &"a".repeat(63)] {
            assert_eq!(label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-v", "v-", "a b", "a/b", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_names() {
        for ok in [
            "http",
            "h2c",
            "serve-80-tcp",
            "a",
            "x-1-y",
            "dns-tcp-123456",
        ] {
            assert_eq!(port_name(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", "must be non-empty"),
            ("abcdefghijklmnop", "must be no more than 15"),
            ("HTTP", "must contain only lowercase"),
            ("my_port", "must contain only lowercase"),
            ("8080", "must contain at least one letter"),
            ("a--b", "must not contain consecutive"),
            ("-http", "must not begin or end"),
            ("http-", "must not begin or end"),
        ];
        for (bad, why) in cases {
            let err = port_name(bad).expect_err(bad);
            assert!(err.starts_with(why), "{bad}: {err}");
        }
    }
}
