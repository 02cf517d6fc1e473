//! What a TLS ClientHello asks for before any TLS is terminated: the server name, for
//! routing `tls[]` by `sniHosts`, and the ALPN protocols, which tell Istio's mTLS from an
//! app's own TLS. Bounds-checked throughout: malformed input yields `None`.

/// The parts of a ClientHello the proxy decides on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// SNI, lowercased.
    pub server_name: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}

impl ClientHello {
    /// Whether the client is a sidecar speaking Istio's mTLS: it offers one of Istio's ALPN
    /// values (`istio`, `istio-peer-exchange`, `istio-http/1.1`, `istio-h2`...), as Istio's
    /// inbound listener tells its mTLS filter chain from passthrough.
    pub fn offers_istio(&self) -> bool {
        self.alpn
            .iter()
            .any(|p| p == b"istio" || p.starts_with(b"istio-"))
    }
}

/// Parses one TLS record holding a ClientHello and returns its SNI host name.
pub fn server_name(record: &[u8]) -> Option<String> {
    parse(record)?.server_name
}

/// Parses one TLS record holding a ClientHello.
pub fn parse(record: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(record);
    if r.u8()? != 0x16 {
        return None;
    }
    r.skip(2)?; // record version
    let len = r.u16()? as usize;
    let mut hs = Reader(r.take(len)?);
    if hs.u8()? != 0x01 {
        return None; // not a ClientHello
    }
    let body_len = hs.u24()?;
    let mut ch = Reader(hs.take(body_len)?);
    ch.skip(2 + 32)?; // version, random
    let sid = ch.u8()? as usize;
    ch.skip(sid)?;
    let suites = ch.u16()? as usize;
    ch.skip(suites)?;
    let compression = ch.u8()? as usize;
    ch.skip(compression)?;
    let ext_len = ch.u16()? as usize;
    let mut ext = Reader(ch.take(ext_len)?);
    let mut hello = ClientHello::default();
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let len = ext.u16()? as usize;
        let data = ext.take(len)?;
        match kind {
            EXT_SERVER_NAME if hello.server_name.is_none() => {
                let mut sni = Reader(data);
                let list_len = sni.u16()? as usize;
                let mut list = Reader(sni.take(list_len)?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name_len = list.u16()? as usize;
                    let name = list.take(name_len)?;
                    if name_type == 0 {
                        hello.server_name = std::str::from_utf8(name)
                            .ok()
                            .map(|s| s.to_ascii_lowercase());
                        break;
                    }
                }
            }
            EXT_ALPN => {
                let mut alpn = Reader(data);
                let list_len = alpn.u16()? as usize;
                let mut list = Reader(alpn.take(list_len)?);
                while !list.0.is_empty() {
                    let len = list.u8()? as usize;
                    hello.alpn.push(list.take(len)?.to_vec());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// How many bytes the first TLS record needs, once its 5-byte header is in.
pub fn record_len(header: &[u8]) -> Option<usize> {
    (header.len() >= 5).then(|| 5 + u16::from_be_bytes([header[3], header[4]]) as usize)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
}

/// A minimal ClientHello naming `host`, for tests.
pub fn client_hello(host: &str) -> Vec<u8> {
    client_hello_offering(host, &[])
}

/// A minimal ClientHello naming `host` and offering `alpn`, for tests.
pub fn client_hello_offering(host: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let name = host.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    if !alpn.is_empty() {
        let list: Vec<u8> = alpn
            .iter()
            .flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied()))
            .collect();
        ext.extend_from_slice(&EXT_ALPN.to_be_bytes());
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_name() {
        let hello = client_hello("Api.Example.com");
        assert_eq!(record_len(&hello), Some(hello.len()));
        assert_eq!(server_name(&hello).as_deref(), Some("api.example.com"));
    }

    #[test]
    fn reads_the_alpn_offer() {
        let hello =
            client_hello_offering("outbound_.9080_._.reviews", &[b"istio-http/1.1", b"istio"]);
        let parsed = parse(&hello).unwrap();
        assert_eq!(
            parsed.alpn,
            vec![b"istio-http/1.1".to_vec(), b"istio".to_vec()]
        );
        assert!(parsed.offers_istio());
        let app = parse(&client_hello_offering(
            "api.example.com",
            &[b"h2", b"http/1.1"],
        ))
        .unwrap();
        assert!(!app.offers_istio());
        assert!(!parse(&client_hello("a")).unwrap().offers_istio());
    }

    #[test]
    fn truncated_or_garbage_input_is_none() {
        let hello = client_hello("a.example");
        for cut in 0..hello.len() {
            assert_eq!(server_name(&hello[..cut]), None);
        }
        assert_eq!(server_name(&[0x16, 3, 1, 0xff, 0xff, 1]), None);
    }
}
