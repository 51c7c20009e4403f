//! A client certificate's Distinguished Name as libvirtd sees it, and
//! libvirtd's `tls_allowed_dn_list` wildcards.
//!
//! libvirtd formats the DN with gnutls's `gnutls_x509_crt_get_dn` and
//! matches it with `g_pattern_match_simple`. gnutls writes the relative
//! names in the order the certificate stores them, joined by `,` (a
//! multi-valued one by `+`), attributes by their short names, values
//! escaped as RFC 4514 escapes them: `C=GB,ST=London,O=Red Hat,CN=client`.
//! `virt-pki-query-dn FILE` prints the same string.

use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

/// The subject DN of a DER certificate in gnutls's format, or `None` when
/// the certificate does not parse.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = String::new();
    for (i, rdn) in cert.subject().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            push_attribute(&mut out, atv);
        }
    }
    Some(out)
}

fn push_attribute(out: &mut String, atv: &AttributeTypeAndValue<'_>) {
    out.push_str(&short_name(atv.attr_type()));
    out.push('=');
    match atv.as_str() {
        Ok(value) => escape_into(out, value),
        // A value that is no string type: RFC 4514's '#' and the DER in hex.
        Err(_) => {
            out.push('#');
            for byte in atv.attr_value().data.iter() {
                out.push_str(&format!("{byte:02x}"));
            }
        }
    }
}

/// gnutls's names for the attributes it knows; the dotted OID otherwise.
fn short_name(oid: &Oid<'_>) -> String {
    let known: [(&Oid<'_>, &str); 14] = [
        (&oid_registry::OID_X509_COMMON_NAME, "CN"),
        (&oid_registry::OID_X509_COUNTRY_NAME, "C"),
        (&oid_registry::OID_X509_LOCALITY_NAME, "L"),
        (&oid_registry::OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
        (&oid_registry::OID_X509_ORGANIZATION_NAME, "O"),
        (&oid_registry::OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (&oid_registry::OID_X509_STREET_ADDRESS, "street"),
        (&oid_registry::OID_X509_SERIALNUMBER, "serialNumber"),
        (&oid_registry::OID_X509_TITLE, "title"),
        (&oid_registry::OID_X509_SURNAME, "SN"),
        (&oid_registry::OID_X509_GIVEN_NAME, "givenName"),
        (&oid_registry::OID_DOMAIN_COMPONENT, "DC"),
        (&oid_registry::OID_PKCS9_EMAIL_ADDRESS, "EMAIL"),
        (&oid_registry::OID_X509_DN_QUALIFIER, "dnQualifier"),
    ];
    if let Some((_, name)) = known.iter().find(|(known, _)| *known == oid) {
        return (*name).to_string();
    }
    if oid.to_id_string() == "0.9.2342.19200300.100.1.1" {
        return "UID".to_string();
    }
    oid.to_id_string()
}

/// RFC 4514 escaping, as gnutls does it.
fn escape_into(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Whether `dn` matches one of the patterns: `*` stands for any run of
/// characters and `?` for one, as in GLib's `g_pattern_match_simple`.
pub fn allowed(dn: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| glob(p.as_bytes(), dn.as_bytes()))
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matching with one backtrack point: linear in practice and
    // never recursive, whatever the pattern.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_glib_does() {
        let dn = "C=GB,ST=London,L=London,O=Red Hat,CN=client";
        let list = |p: &str| vec![p.to_string()];
        assert!(allowed(dn, &list("C=GB,ST=London,L=London,O=Red Hat,CN=*")));
        assert!(allowed(dn, &list("*CN=client")));
        assert!(allowed(dn, &list("C=G?,*")));
        assert!(allowed(dn, &list(dn)));
        assert!(!allowed(
            dn,
            &list("C=GB,ST=London,L=London,O=Red Hat,CN=other")
        ));
        assert!(!allowed(dn, &list("CN=client")));
        assert!(!allowed(dn, &[]));
        assert!(allowed("", &list("*")));
        assert!(!allowed("abc", &list("ab")));
    }

    #[test]
    fn values_are_escaped_as_rfc4514_says() {
        let mut out = String::new();
        escape_into(&mut out, "cli, ent+x=y ");
        assert_eq!(out, "cli\\, ent\\+x=y\\ ");
    }
}
