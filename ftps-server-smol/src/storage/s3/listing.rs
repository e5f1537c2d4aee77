//! The two listings the backend reads, `ListObjectsV2` (a folder now) and `ListObjectVersions` (its history), parsed
//! by one small XML walk.
//!
//! **Keys are asked for URL-encoded** (`encoding-type=url` on both requests): a key may hold characters XML 1.0
//! cannot carry (U+0001 to U+001F, which an FTP name may contain), and a plain listing of such a key is a document
//! no parser accepts. S3 encodes form-style, a space as `+` and a `+` as `%2B` (MinIO does the same), so a value is
//! decoded as botocore's `unquote_plus` does; percent-decoding alone would list `a b.txt` as `a+b.txt`, a name
//! that then does not open. A response without `<EncodingType>url</EncodingType>` (moto's version listing, servers
//! that ignore the parameter) carries its keys as they are.
//!
//! Only what the backend uses is kept; unknown elements are skipped, and a page that says it is truncated must say
//! where the next one starts, so a listing never ends early in silence.

use std::time::SystemTime;

use percent_encoding::percent_decode_str;
use xmlparser::{ElementEnd, Token, Tokenizer};

use super::{other, parse_iso8601};
use crate::storage::StorageError;

/// An object of a `ListObjectsV2` page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Object {
    pub(super) key: String,
    pub(super) size: u64,
    /// `LastModified`, when the server sent one that parses.
    pub(super) modified: Option<SystemTime>,
}

/// One page of `ListObjectsV2`.
#[derive(Debug, Default)]
pub(super) struct ObjectsPage {
    pub(super) objects: Vec<Object>,
    /// `CommonPrefixes`, each ending in the delimiter.
    pub(super) prefixes: Vec<String>,
    /// `NextContinuationToken`, when the listing goes on.
    pub(super) next_token: Option<String>,
}

/// One entry of a `ListObjectVersions` page: a version of an object or a delete marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ObjectVersion {
    pub(super) key: String,
    pub(super) version_id: String,
    /// A delete marker, not content.
    pub(super) deleted: bool,
    /// S3's `IsLatest`: the key's newest entry.
    pub(super) latest: bool,
    pub(super) modified: SystemTime,
    pub(super) size: u64,
}

/// Where the next page of a version listing starts: `NextKeyMarker` and `NextVersionIdMarker`.
pub(super) type Marker = (String, Option<String>);

/// One page of `ListObjectVersions`, in the document's order (keys ascending, each key's versions newest first).
#[derive(Debug, Default)]
pub(super) struct VersionsPage {
    pub(super) versions: Vec<ObjectVersion>,
    pub(super) prefixes: Vec<String>,
    pub(super) next: Option<Marker>,
}

/// The fields of a `Contents`, `Version` or `DeleteMarker` element, gathered until it closes.
#[derive(Default)]
struct Fields {
    key: Option<String>,
    version_id: Option<String>,
    modified: Option<SystemTime>,
    size: u64,
    latest: bool,
}

impl Fields {
    /// Takes one child element's text; `Size` must be a number.
    fn set(&mut self, field: &str, value: String, what: &str) -> Result<(), StorageError> {
        match field {
            "Key" => self.key = Some(value),
            "VersionId" => self.version_id = Some(value),
            "LastModified" => self.modified = parse_iso8601(value.trim()),
            "IsLatest" => self.latest = value.trim() == "true",
            "Size" => {
                self.size = value
                    .trim()
                    .parse()
                    .map_err(|_| malformed(what, "bad Size"))?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn malformed(what: &str, detail: &str) -> StorageError {
    other(format!("S3 {what}: {detail}"))
}

/// Parses a `ListBucketResult` (`ListObjectsV2`) document.
pub(super) fn parse_objects(xml: &str) -> Result<ObjectsPage, StorageError> {
    const WHAT: &str = "listing";
    let mut page = ObjectsPage::default();
    let mut fields = Fields::default();
    let (mut truncated, mut url_encoded) = (false, false);
    walk(xml, WHAT, |path, value| {
        match path {
            [_, "Contents", field] => fields.set(field, value, WHAT)?,
            [_, "Contents"] => {
                let f = std::mem::take(&mut fields);
                page.objects.push(Object {
                    key: f
                        .key
                        .ok_or_else(|| malformed(WHAT, "an object without Key"))?,
                    size: f.size,
                    modified: f.modified,
                });
            }
            [_, "CommonPrefixes", "Prefix"] => page.prefixes.push(value),
            [_, "IsTruncated"] => truncated = value.trim() == "true",
            [_, "NextContinuationToken"] => page.next_token = Some(value).filter(|t| !t.is_empty()),
            [_, "EncodingType"] => url_encoded = value.trim() == "url",
            _ => {}
        }
        Ok(())
    })?;
    if truncated && page.next_token.is_none() {
        return Err(malformed(WHAT, "truncated without NextContinuationToken"));
    }
    if !truncated {
        page.next_token = None;
    }
    if url_encoded {
        for object in &mut page.objects {
            object.key = url_decode(&object.key, WHAT)?;
        }
        decode_all(&mut page.prefixes, WHAT)?;
    }
    Ok(page)
}

/// Parses a `ListVersionsResult` document, keeping the order of `Version` and `DeleteMarker` entries (a typed
/// parser into two lists would lose which came first within one timestamp).
pub(super) fn parse_versions(xml: &str) -> Result<VersionsPage, StorageError> {
    const WHAT: &str = "version listing";
    let mut page = VersionsPage::default();
    let mut fields = Fields::default();
    let (mut truncated, mut url_encoded) = (false, false);
    let (mut next_key, mut next_version) = (None, None);
    walk(xml, WHAT, |path, value| {
        match path {
            [_, "Version" | "DeleteMarker", field] => fields.set(field, value, WHAT)?,
            [_, kind @ ("Version" | "DeleteMarker")] => {
                let f = std::mem::take(&mut fields);
                page.versions.push(ObjectVersion {
                    key: f.key.ok_or_else(|| malformed(WHAT, "entry without Key"))?,
                    version_id: f
                        .version_id
                        .ok_or_else(|| malformed(WHAT, "entry without VersionId"))?,
                    deleted: *kind == "DeleteMarker",
                    latest: f.latest,
                    modified: f
                        .modified
                        .ok_or_else(|| malformed(WHAT, "entry without a LastModified date"))?,
                    size: f.size,
                });
            }
            [_, "CommonPrefixes", "Prefix"] => page.prefixes.push(value),
            [_, "IsTruncated"] => truncated = value.trim() == "true",
            [_, "NextKeyMarker"] => next_key = Some(value).filter(|k| !k.is_empty()),
            [_, "NextVersionIdMarker"] => next_version = Some(value).filter(|v| !v.is_empty()),
            [_, "EncodingType"] => url_encoded = value.trim() == "url",
            _ => {}
        }
        Ok(())
    })?;
    if url_encoded {
        for version in &mut page.versions {
            version.key = url_decode(&version.key, WHAT)?;
        }
        decode_all(&mut page.prefixes, WHAT)?;
        next_key = next_key.map(|k| url_decode(&k, WHAT)).transpose()?;
    }
    if truncated {
        let key = next_key.ok_or_else(|| malformed(WHAT, "truncated without NextKeyMarker"))?;
        page.next = Some((key, next_version));
    }
    Ok(page)
}

/// Calls `on_close(path, text)` as each element closes, with its path from the root (`["ListBucketResult",
/// "Contents", "Key"]`) and its text with entities decoded. An unbalanced or cut document is an error.
fn walk<'x>(
    xml: &'x str,
    what: &str,
    mut on_close: impl FnMut(&[&'x str], String) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut path: Vec<&str> = Vec::new();
    let mut text = String::new();
    for token in Tokenizer::from(xml) {
        let token = token.map_err(|e| malformed(what, &e.to_string()))?;
        match token {
            Token::ElementStart { local, .. } => {
                path.push(local.as_str());
                text.clear();
            }
            Token::ElementEnd {
                end: ElementEnd::Close(..) | ElementEnd::Empty,
                ..
            } => {
                on_close(&path, std::mem::take(&mut text))?;
                path.pop();
            }
            Token::Text { text: t } => text.push_str(&unescape(t.as_str(), what)?),
            Token::Cdata { text: t, .. } => text.push_str(t.as_str()),
            _ => {}
        }
    }
    if path.is_empty() {
        Ok(())
    } else {
        Err(malformed(what, "the document ends early"))
    }
}

/// Decodes the five predefined entities and character references of XML text.
fn unescape(raw: &str, what: &str) -> Result<String, StorageError> {
    let bad = || malformed(what, "bad XML entity");
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp + 1..];
        let end = tail.find(';').ok_or_else(bad)?;
        let decoded = match &tail[..end] {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            reference => {
                let code = if let Some(hex) = reference.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    reference.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                code.and_then(char::from_u32).ok_or_else(bad)?
            }
        };
        out.push(decoded);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value of a listing sent with `encoding-type=url`: `+` is a space, `%XX` a byte, the bytes UTF-8.
fn url_decode(value: &str, what: &str) -> Result<String, StorageError> {
    let spaced = value.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| malformed(what, "a URL-encoded key is not UTF-8"))
}

fn decode_all(values: &mut [String], what: &str) -> Result<(), StorageError> {
    for value in values {
        *value = url_decode(value, what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_markers_in_document_order() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>a/</Prefix><KeyMarker/><IsTruncated>true</IsTruncated>
  <NextKeyMarker>a/x &amp; y</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>
  <DeleteMarker><Key>a/x &amp; y</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest>
    <LastModified>2026-12-06T20:00:02.000Z</LastModified></DeleteMarker>
  <Version><Key>a/x &amp; y</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest>
    <LastModified>2026-12-06T20:00:01.500Z</LastModified><ETag>"e"</ETag><Size>12</Size>
    <Owner><ID>o</ID></Owner></Version>
  <CommonPrefixes><Prefix>a/&#x64;ir/</Prefix></CommonPrefixes>
</ListVersionsResult>"#;
        let page = parse_versions(xml).unwrap();
        assert_eq!(page.versions.len(), 2);
        assert!(page.versions[0].deleted);
        assert_eq!(page.versions[0].key, "a/x & y");
        assert_eq!(page.versions[1].version_id, "v2");
        assert_eq!(page.versions[1].size, 12);
        assert!(page.versions[1].modified < page.versions[0].modified);
        assert_eq!(page.prefixes, ["a/dir/"]);
        assert_eq!(
            page.next,
            Some(("a/x & y".to_owned(), Some("v9".to_owned())))
        );
    }

    /// AWS's form of `encoding-type=url`: a space is `+`, a plus `%2B`, a control character `%01`; the element
    /// comes after the entries it applies to.
    #[test]
    fn url_encoded_keys_are_decoded_form_style() {
        let versions = r#"<ListVersionsResult><IsTruncated>true</IsTruncated>
  <NextKeyMarker>a/x+%2B+y%01</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>
  <Version><Key>a/x+%2B+y%01</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest>
    <LastModified>2026-12-06T20:00:01Z</LastModified><Size>3</Size></Version>
  <CommonPrefixes><Prefix>a/my+dir%C3%A9/</Prefix></CommonPrefixes>
  <EncodingType>url</EncodingType></ListVersionsResult>"#;
        let page = parse_versions(versions).unwrap();
        assert_eq!(page.versions[0].key, "a/x + y\u{1}");
        assert_eq!(page.prefixes, ["a/my diré/"]);
        assert_eq!(
            page.next,
            Some(("a/x + y\u{1}".to_owned(), Some("v1".to_owned())))
        );

        let objects = r#"<ListBucketResult><Name>b</Name><Prefix>a%2F</Prefix><KeyCount>2</KeyCount>
  <IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>
  <NextContinuationToken>1+tok/en==</NextContinuationToken>
  <Contents><Key>a/1%2B1+%3D+2.txt</Key><LastModified>2026-12-06T17:38:26.000Z</LastModified>
    <ETag>&quot;e&quot;</ETag><Size>42</Size><StorageClass>STANDARD</StorageClass></Contents>
  <CommonPrefixes><Prefix>a/b+c/</Prefix></CommonPrefixes></ListBucketResult>"#;
        let page = parse_objects(objects).unwrap();
        assert_eq!(page.objects[0].key, "a/1+1 = 2.txt");
        assert_eq!(page.objects[0].size, 42);
        assert!(page.objects[0].modified.is_some());
        assert_eq!(page.prefixes, ["a/b c/"]);
        // The token is opaque: never decoded.
        assert_eq!(page.next_token.as_deref(), Some("1+tok/en=="));
    }

    /// Without `<EncodingType>url` (moto's version listing), a `+` is a plus.
    #[test]
    fn keys_without_an_encoding_are_taken_as_they_are() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b%20c</Key>\
                   <Size>1</Size></Contents><NextContinuationToken>t</NextContinuationToken></ListBucketResult>";
        let page = parse_objects(xml).unwrap();
        assert_eq!(page.objects[0].key, "a+b%20c");
        assert_eq!(page.next_token, None, "not truncated: no next page");
    }

    #[test]
    fn malformed_listings_are_errors() {
        for xml in [
            "<ListVersionsResult><Version><Key>k</Key></Version></ListVersionsResult>",
            "<ListVersionsResult><Version><Key>k</Key><VersionId>v</VersionId>\
             <LastModified>2026-12-06T20:00:02Z</LastModified><Size>x</Size></Version></ListVersionsResult>",
            "<ListVersionsResult><IsTruncated>true</IsTruncated></ListVersionsResult>",
            "<ListVersionsResult><Version><Key>&bogus;</Key>",
            "<ListVersionsResult><Version",
            "<ListVersionsResult><Version><Key>%FF</Key><VersionId>v</VersionId>\
             <LastModified>2026-12-06T20:00:02Z</LastModified></Version>\
             <EncodingType>url</EncodingType></ListVersionsResult>",
        ] {
            assert!(parse_versions(xml).is_err(), "{xml}: {:?}", parse_versions(xml));
        }
        for xml in [
            "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k",
            "<ListBucketResult><Contents><Key>%C3</Key></Contents><EncodingType>url</EncodingType>\
             </ListBucketResult>",
        ] {
            assert!(
                parse_objects(xml).is_err(),
                "{xml}: {:?}",
                parse_objects(xml)
            );
        }
    }
}
