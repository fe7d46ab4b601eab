//! Stage 1's network-boot parsers, which read what any machine on the boot
//! network sends: DHCP replies (`ballast_init::netboot::dhcp`) and the HTTP
//! response head and URLs of the root download (`ballast_init::netboot::http`).

use ballast_init::netboot::{dhcp, http};

/// A datagram on port 68: parsed or ignored, never a panic; a parsed reply
/// has a DHCP message type and the transaction id of its bytes.
pub fn dhcp_reply(data: &[u8]) {
    if let Some(reply) = dhcp::parse(data) {
        assert!(data.len() >= 240, "a reply shorter than the BOOTP header");
        assert_eq!(reply.xid.to_be_bytes(), data[4..8], "transaction id");
    }
}

/// A response head (and the same text as a root URL).
pub fn http_head(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let _ = http::parse_head(text);
    if let Ok(url) = http::HttpUrl::parse(text) {
        // What a parsed URL prints is itself a URL that parses.
        let again = url.to_string();
        assert!(
            http::HttpUrl::parse(&again).is_ok(),
            "{text:?} -> {again:?}"
        );
    }
}
