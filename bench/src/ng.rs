//! rtpengine's ng control protocol: bencode values and a UDP client.
//!
//! A message is `COOKIE SP DICT`, DICT in bencode; the reply repeats the cookie. The decoder
//! takes untrusted bytes (a reply from another program) and never panics: it bounds nesting
//! depth and checks every length against the input. Dictionary keys are kept in the order
//! they arrived.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Deepest nesting the decoder accepts (rtpengine's replies nest about 10 deep).
const MAX_DEPTH: usize = 64;

/// A bencode value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`.
    Bytes(Vec<u8>),
    /// `l…e`.
    List(Vec<Value>),
    /// `d…e`, keys in arrival order.
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    /// A byte-string value from text.
    pub fn str(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from `(key, value)` pairs.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Value::Dict(pairs.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
    }

    /// The value under `key` of a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a byte string (lossy).
    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The integer.
    #[cfg(test)]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Appends the bencode of this value to `out`. Dictionary keys are written sorted, as
    /// bencode requires.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Value::Dict(d) => {
                let mut sorted: Vec<_> = d.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'd');
                for (k, v) in sorted {
                    Value::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes exactly one value filling all of `input`.
    pub fn decode(input: &[u8]) -> Result<Value> {
        let mut pos = 0;
        let v = decode_at(input, &mut pos, 0)?;
        if pos != input.len() {
            bail!("{} trailing bytes after the bencode value", input.len() - pos);
        }
        Ok(v)
    }
}

fn decode_at(input: &[u8], pos: &mut usize, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        bail!("bencode nested deeper than {MAX_DEPTH}");
    }
    let tag = *input.get(*pos).context("bencode ends early")?;
    match tag {
        b'i' => {
            let end = find(input, *pos + 1, b'e')?;
            let text = std::str::from_utf8(&input[*pos + 1..end])?;
            let i = text.parse::<i64>().with_context(|| format!("bad bencode integer {text:?}"))?;
            *pos = end + 1;
            Ok(Value::Int(i))
        }
        b'l' | b'd' => {
            *pos += 1;
            let mut items = Vec::new();
            let mut pairs = Vec::new();
            loop {
                match input.get(*pos) {
                    None => bail!("bencode list or dictionary not terminated"),
                    Some(b'e') => {
                        *pos += 1;
                        break;
                    }
                    Some(_) if tag == b'l' => items.push(decode_at(input, pos, depth + 1)?),
                    Some(_) => {
                        let Value::Bytes(k) = decode_at(input, pos, depth + 1)? else {
                            bail!("bencode dictionary key is not a byte string");
                        };
                        let v = decode_at(input, pos, depth + 1)?;
                        pairs.push((k, v));
                    }
                }
            }
            Ok(if tag == b'l' { Value::List(items) } else { Value::Dict(pairs) })
        }
        b'0'..=b'9' => {
            let colon = find(input, *pos, b':')?;
            let len: usize = std::str::from_utf8(&input[*pos..colon])?.parse().context("bad bencode string length")?;
            let start = colon + 1;
            let end =
                start.checked_add(len).filter(|&e| e <= input.len()).context("bencode string runs past the end")?;
            *pos = end;
            Ok(Value::Bytes(input[start..end].to_vec()))
        }
        t => bail!("unexpected byte {t:#04x} in bencode"),
    }
}

fn find(input: &[u8], from: usize, byte: u8) -> Result<usize> {
    input
        .get(from..)
        .and_then(|s| s.iter().position(|&b| b == byte))
        .map(|i| from + i)
        .with_context(|| format!("bencode: no {:?} found", byte as char))
}

/// Splits a reply into its cookie and dictionary and checks `result`: `ok` (or `pong`) gives
/// the dictionary; `error` fails with rtpengine's `error-reason`.
pub fn parse_reply(reply: &[u8], cookie: &str) -> Result<Value> {
    let sp = reply.iter().position(|&b| b == b' ').context("ng reply has no cookie")?;
    if &reply[..sp] != cookie.as_bytes() {
        bail!("ng reply for cookie {:?}, expected {cookie:?}", String::from_utf8_lossy(&reply[..sp]));
    }
    let v = Value::decode(&reply[sp + 1..]).context("decoding the ng reply")?;
    match v.get("result").and_then(Value::as_str).as_deref() {
        Some("ok") | Some("pong") => Ok(v),
        Some("error") => {
            bail!("rtpengine: {}", v.get("error-reason").and_then(Value::as_str).unwrap_or_else(|| "error".into()))
        }
        Some(other) => bail!("rtpengine answered result {other:?}"),
        None => bail!("ng reply without a result"),
    }
}

/// An ng client over UDP.
pub struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    next_cookie: u64,
}

impl Client {
    /// A client for the ng listener at `server`.
    pub fn new(server: SocketAddr) -> Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Self { sock, server, next_cookie: 1 })
    }

    /// Sends `msg` and waits for its reply, retrying a few times (UDP).
    pub fn request(&mut self, msg: &Value) -> Result<Value> {
        let cookie = format!("b{}-{}", std::process::id(), self.next_cookie);
        self.next_cookie += 1;
        let mut out = format!("{cookie} ").into_bytes();
        msg.encode(&mut out);
        let mut buf = vec![0u8; 65536];
        for _ in 0..6 {
            self.sock.send_to(&out, self.server)?;
            while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                // A late reply to an earlier retry carries an older cookie: skip it.
                if from == self.server && buf[..n].starts_with(format!("{cookie} ").as_bytes()) {
                    return parse_reply(&buf[..n], &cookie);
                }
            }
        }
        bail!("rtpengine at {} did not answer", self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from rtpengine 10.5.3.5 (Debian bookworm) on loopback.
    const OFFER: &[u8] = include_bytes!("../testdata/ng_offer_reply.bin");
    const ANSWER: &[u8] = include_bytes!("../testdata/ng_answer_reply.bin");
    const DELETE: &[u8] = include_bytes!("../testdata/ng_delete_reply.bin");
    const ERROR: &[u8] = include_bytes!("../testdata/ng_error_reply.bin");

    #[test]
    fn offer_reply_carries_the_sdp_for_b() {
        let v = parse_reply(OFFER, "o1").unwrap();
        let sdp = v.get("sdp").and_then(Value::as_str).unwrap();
        assert!(sdp.contains("m=audio 30036 RTP/SAVP 0"), "{sdp}");
        assert!(sdp.contains("a=crypto:8 AES_CM_128_HMAC_SHA1_32 inline:"));
    }

    #[test]
    fn answer_reply_and_wrong_cookie() {
        let v = parse_reply(ANSWER, "a1").unwrap();
        assert!(v.get("sdp").and_then(Value::as_str).unwrap().contains("m=audio 30054 RTP/SAVP 0"));
        assert!(parse_reply(ANSWER, "a2").is_err());
    }

    #[test]
    fn delete_reply_has_nested_stats() {
        let v = parse_reply(DELETE, "d1").unwrap();
        let rtp = v.get("totals").and_then(|t| t.get("RTP")).unwrap();
        assert_eq!(rtp.get("packets").and_then(Value::as_int), Some(0));
        assert!(v.get("created").and_then(Value::as_int).unwrap() > 1_700_000_000);
    }

    #[test]
    fn error_reply_names_the_reason() {
        let e = parse_reply(ERROR, "e1").unwrap_err().to_string();
        assert!(e.contains("Unrecognized command"), "{e}");
    }

    #[test]
    fn encode_sorts_keys_and_round_trips() {
        let msg = Value::dict([
            ("sdp", Value::str("v=0\r\n")),
            ("command", Value::str("offer")),
            ("flags", Value::List(vec![Value::str("x")])),
            ("n", Value::Int(-3)),
        ]);
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(out, b"d7:command5:offer5:flagsl1:xe1:ni-3e3:sdp5:v=0\r\ne");
        let back = Value::decode(&out).unwrap();
        assert_eq!(back.get("n"), Some(&Value::Int(-3)));
        assert_eq!(back.get("sdp").and_then(Value::as_str).as_deref(), Some("v=0\r\n"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"d",
            b"i12",
            b"ixe",
            b"5:abc",
            b"99999999999999999999:a",
            b"18446744073709551615:a",
            b"di1ei2ee",
            b"x",
            b"le1:a",
        ] {
            assert!(Value::decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = [vec![b'l'; 1000], vec![b'e'; 1000]].concat();
        assert!(Value::decode(&deep).is_err());
        // Every prefix of a real reply is an error, never a panic.
        for n in 0..DELETE.len() - 3 {
            assert!(Value::decode(&DELETE[3..3 + n]).is_err());
        }
        assert!(parse_reply(b"nocookie", "x").is_err());
    }
}
