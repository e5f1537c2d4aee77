//! The names in a client certificate (subject CN, subjectAltName), for mapping certificates to
//! users. A deliberately small DER reader (RFC 5280 section 4.1): it reads only the fields needed,
//! never panics, and gives up (returns no names) on anything unexpected.

/// The subject common names and subjectAltName entries (DNS, e-mail, URI) of a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// Subject CN attributes.
    pub common_names: Vec<String>,
    /// subjectAltName dNSName, rfc822Name and uniformResourceIdentifier entries.
    pub alt_names: Vec<String>,
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;
/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// GeneralName context tags: rfc822Name [1], dNSName [2], uniformResourceIdentifier [6].
const SAN_TAGS: [u8; 3] = [0x81, 0x82, 0x86];

/// One TLV: its tag, its contents, and what follows it.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers do not occur in the fields read here
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = rest.get(..count)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(count..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = read_tlv(input)?;
    (t == tag).then_some((body, rest))
}

fn string_value(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, TeletexString (treated as Latin-ish ASCII), IA5String.
        0x0c | 0x13 | 0x14 | 0x16 => std::str::from_utf8(body).ok().map(str::to_owned),
        _ => None,
    }
}

/// The names in a DER certificate; empty on anything malformed.
#[must_use]
pub fn certificate_names(der: &[u8]) -> CertificateNames {
    parse(der).unwrap_or_default()
}

fn parse(der: &[u8]) -> Option<CertificateNames> {
    let (cert, _) = expect(der, TAG_SEQUENCE)?;
    let (mut tbs, _) = expect(cert, TAG_SEQUENCE)?;
    if let Some((TAG_VERSION, _, rest)) = read_tlv(tbs) {
        tbs = rest;
    }
    // serialNumber, signature, issuer, validity: skipped.
    for _ in 0..4 {
        tbs = read_tlv(tbs)?.2;
    }
    let (subject, rest) = expect(tbs, TAG_SEQUENCE)?;
    let mut names = CertificateNames::default();
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (set, next) = expect(rdns, TAG_SET)?;
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, next) = expect(attrs, TAG_SEQUENCE)?;
            attrs = next;
            let (oid, value) = expect(attr, TAG_OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, body, _) = read_tlv(value)?;
                names.common_names.extend(string_value(tag, body));
            }
        }
    }
    // subjectPublicKeyInfo, then optional issuerUniqueID [1], subjectUniqueID [2], extensions [3].
    let mut tail = read_tlv(rest)?.2;
    while let Some((tag, body, next)) = read_tlv(tail) {
        tail = next;
        if tag != TAG_EXTENSIONS {
            continue;
        }
        let (mut exts, _) = expect(body, TAG_SEQUENCE)?;
        while !exts.is_empty() {
            let (ext, next) = expect(exts, TAG_SEQUENCE)?;
            exts = next;
            let (oid, mut ext_rest) = expect(ext, TAG_OID)?;
            if oid != OID_SUBJECT_ALT_NAME {
                continue;
            }
            if let Some((TAG_BOOLEAN, _, after)) = read_tlv(ext_rest) {
                ext_rest = after;
            }
            let (octets, _) = expect(ext_rest, TAG_OCTET_STRING)?;
            let (mut general_names, _) = expect(octets, TAG_SEQUENCE)?;
            while let Some((tag, body, next)) = read_tlv(general_names) {
                general_names = next;
                if SAN_TAGS.contains(&tag) {
                    names
                        .alt_names
                        .extend(std::str::from_utf8(body).ok().map(str::to_owned));
                }
            }
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cn_and_sans_from_an_rcgen_certificate() {
        let mut params = rcgen::CertificateParams::new(vec![
            "client.example.com".to_owned(),
            "other.example.com".to_owned(),
        ])
        .unwrap();
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "alice@example.com".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = certificate_names(cert.der());
        assert_eq!(names.common_names, vec!["alice".to_owned()]);
        assert_eq!(
            names.alt_names,
            vec![
                "client.example.com".to_owned(),
                "other.example.com".to_owned(),
                "alice@example.com".to_owned()
            ]
        );
    }

    #[test]
    fn malformed_input_gives_no_names() {
        assert_eq!(certificate_names(b""), CertificateNames::default());
        assert_eq!(
            certificate_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            CertificateNames::default()
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        // Every truncation and single-byte corruption is handled without panicking.
        for cut in 0..der.len() {
            let _ = certificate_names(&der[..cut]);
            let mut bad = der.clone();
            bad[cut] ^= 0xff;
            let _ = certificate_names(&bad);
        }
    }
}
