//! Plain HTTP(S) downloads (`ADD https://…`), with the TLS setup registries get: system roots
//! plus `certs.d/<host>/*.crt`, and kiln's user agent. The body is streamed to the caller's
//! writer and hashed on the way, never held whole.

use std::io::Write;
use std::time::SystemTime;

use futures_util::StreamExt;

use super::error::{RegistryError, RemoteCause};
use super::transport::{RegistryOptions, http_client_for, install_crypto_provider};
use crate::digest::{Digest, Hasher};

/// What a download gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// sha256 of the body.
    pub digest: Digest,
    /// Its length.
    pub size: u64,
    /// The `Last-Modified` header, when the server sent a valid one.
    pub last_modified: Option<SystemTime>,
}

/// GETs `url` and writes the body to `out`.
pub async fn fetch_url(options: &RegistryOptions, url: &str, out: &mut impl Write) -> Result<Fetched, RegistryError> {
    install_crypto_provider();
    let fail = |cause: RemoteCause| RegistryError::Fetch { url: url.to_owned(), cause };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(RemoteCause::Protocol(e.to_string())))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(fail(RemoteCause::Protocol("the URL has no host".to_owned()))),
    };
    let client = http_client_for(options, &host)?;
    let resp = client.get(parsed).send().await.map_err(|e| fail(RemoteCause::from_reqwest(&e)))?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Err(fail(RemoteCause::from_status(status, b"")));
    }
    let last_modified =
        resp.headers().get(reqwest::header::LAST_MODIFIED).and_then(|v| v.to_str().ok()).and_then(httpdate_parse);
    let mut hasher = Hasher::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fail(RemoteCause::from_reqwest(&e)))?;
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(|e| fail(RemoteCause::Protocol(format!("writing the download: {e}"))))?;
    }
    let size = hasher.len();
    Ok(Fetched { digest: hasher.finish(), size, last_modified })
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_parse(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(&rfc3339_of_http_date(text)?).ok()
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → `1994-11-06T08:49:37Z` (RFC 1123 dates only, the form
/// servers send).
fn rfc3339_of_http_date(text: &str) -> Option<String> {
    let mut parts = text.split_whitespace().skip(1);
    let (day, month, year, time) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    Some(format!("{year}-{month:02}-{:0>2}T{time}Z", day))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(t).to_string(), "1994-11-06T08:49:37Z");
        assert!(httpdate_parse("yesterday").is_none());
    }
}
