//! The fast path of reading a recorded event: the lines `watch -o json` writes (one flat object,
//! strings without escapes, plain integers, the `tunnel` and `conntrack` objects) scanned once
//! into a [`Line`] borrowed from the line, with no allocation. serde took about 1.3 µs a line,
//! a third of `diagnose --from`'s time.
//!
//! It only accepts what serde would read into the same [`Line`]; anything else (an escape, a
//! float, a repeated or unknown field, an unexpected type, text after the object) returns None
//! and the caller reads the line with serde, so every other spelling of JSON reads as before.

use std::{borrow::Cow, net::IpAddr};

use super::{Line, LineConntrack, LineTunnel};

/// `text` as a [`Line`], or None when the fast path does not take it.
pub(super) fn line(text: &str) -> Option<Line<'_>> {
    let mut s = Scan { text, at: 0 };
    let mut l = Line::default();
    let mut seen = Fields::default();
    s.object(|s, key| {
        let bit: u64 = match key {
            "ts" => {
                set(&mut l.ts, s.string()?);
                0
            }
            "kind" => {
                set(&mut l.kind, s.string()?);
                1
            }
            "proto" => {
                set(&mut l.proto, s.string()?);
                2
            }
            "src" => {
                set(&mut l.src, s.string()?);
                3
            }
            "dst" => {
                set(&mut l.dst, s.string()?);
                4
            }
            "src_pod" => {
                set(&mut l.src_pod, s.string()?);
                5
            }
            "dst_pod" => {
                set(&mut l.dst_pod, s.string()?);
                6
            }
            "netns" => {
                l.netns = s.uint_as()?;
                7
            }
            "netns_pod" => {
                set(&mut l.netns_pod, s.string()?);
                8
            }
            "ifname" => {
                set(&mut l.ifname, s.string()?);
                9
            }
            "ifindex" => {
                l.ifindex = s.uint_as()?;
                10
            }
            "node" => {
                set(&mut l.node, s.string()?);
                11
            }
            "icmp_type" => {
                l.icmp_type = s.uint_as()?;
                12
            }
            "icmp_code" => {
                l.icmp_code = s.uint_as()?;
                13
            }
            "tcp_flags" => {
                set(&mut l.tcp_flags, s.string()?);
                14
            }
            "tunnel" => {
                l.tunnel = s.tunnel()?;
                15
            }
            "reason" => {
                set(&mut l.reason, s.string()?);
                16
            }
            "reason_code" => {
                l.reason_code = s.uint_as()?;
                17
            }
            "location" => {
                set(&mut l.location, s.string()?);
                18
            }
            "len" => {
                l.len = s.uint_as()?;
                19
            }
            "packet_ct" => {
                set(&mut l.packet_ct, s.string()?);
                20
            }
            "conntrack" => {
                l.conntrack = s.conntrack()?;
                21
            }
            "state" => {
                set(&mut l.state, s.string()?);
                22
            }
            "count" => {
                l.count = s.uint_as()?;
                23
            }
            "direction" => {
                set(&mut l.direction, s.string()?);
                24
            }
            // A float's digits are serde's to read (the same value, by its rounding).
            "duration_ms" => {
                s.null().then_some(())?;
                25
            }
            "nat" => {
                set(&mut l.nat, s.string()?);
                26
            }
            "orig_src" => {
                set(&mut l.orig_src, s.string()?);
                27
            }
            "orig_dst" => {
                set(&mut l.orig_dst, s.string()?);
                28
            }
            "reply_src" => {
                set(&mut l.reply_src, s.string()?);
                29
            }
            "reply_dst" => {
                set(&mut l.reply_dst, s.string()?);
                30
            }
            "reply_seen" => {
                l.reply_seen = s.bool()?;
                31
            }
            "assured" => {
                l.assured = s.bool()?;
                32
            }
            "backend" => {
                set(&mut l.backend, s.string()?);
                33
            }
            "backend_pod" => {
                set(&mut l.backend_pod, s.string()?);
                34
            }
            "service" => {
                set(&mut l.service, s.string()?);
                35
            }
            "conn" => {
                l.conn = s.uint()?;
                36
            }
            "event" => {
                set(&mut l.event, s.string()?);
                37
            }
            "mtu" => {
                l.mtu = s.uint_as()?;
                38
            }
            "dev_mtu" => {
                l.dev_mtu = s.uint_as()?;
                39
            }
            "icmp_src" => {
                l.icmp_src = s.ip()?;
                40
            }
            "icmp_dst" => {
                l.icmp_dst = s.ip()?;
                41
            }
            "hook" => {
                set(&mut l.hook, s.string()?);
                42
            }
            "syns_sent" => {
                l.syns_sent = s.uint_as()?;
                43
            }
            _ => return None,
        };
        // serde refuses a field given twice.
        seen.first(bit)
    })?;
    s.ws();
    (s.at == text.len()).then_some(l)
}

fn set<'a>(field: &mut Option<Cow<'a, str>>, value: Option<&'a str>) {
    *field = value.map(Cow::Borrowed);
}

/// The fields an object has had so far, one bit each (a field given twice is not the fast
/// path's).
#[derive(Default)]
struct Fields(u64);

impl Fields {
    fn first(&mut self, bit: u64) -> Option<()> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(())
    }
}

/// Whether any byte of `word` may be a quote, a backslash or below 0x20 (never false when one is).
fn special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A zero byte in x, as in "Bit Twiddling Hacks" (haszero, hasless).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero(word ^ (ONES * b'"' as u64));
    let backslash = zero(word ^ (ONES * b'\\' as u64));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control != 0
}

/// A position in the line. Each method reads one JSON value (after any whitespace) and
/// returns None when it is not of the form the fast path takes; `Some(None)` is a `null`.
struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        (*self.text.as_bytes().get(self.at)? == byte).then(|| self.at += 1)
    }

    fn word(&mut self, word: &str) -> bool {
        self.ws();
        let found = self.text[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    fn null(&mut self) -> bool {
        self.word("null")
    }

    /// A string without escapes or control characters, borrowed.
    fn plain(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        // Eight bytes at a time while none of them is a quote, a backslash or a control
        // character (the word tests have no false negatives; a flagged word is read bytewise).
        while let Some(chunk) = bytes.get(self.at..self.at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().ok()?);
            if special(word) {
                break;
            }
            self.at += 8;
        }
        loop {
            match *bytes.get(self.at)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        // Both ends are at an ASCII quote: char boundaries.
        let s = self.text.get(start..self.at)?;
        self.at += 1;
        Some(s)
    }

    fn string(&mut self) -> Option<Option<&'a str>> {
        if self.null() { Some(None) } else { self.plain().map(Some) }
    }

    /// A non-negative integer as JSON writes it (no sign, no leading zero, no fraction or
    /// exponent: what follows is checked by the caller's next token).
    fn uint(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        let bytes = self.text.as_bytes();
        let start = self.at;
        while bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = self.text.get(start..self.at)?;
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) || matches!(bytes.get(self.at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        digits.parse::<u64>().ok().map(Some)
    }

    /// An integer that fits `T` (serde refuses one out of its range).
    fn uint_as<T: TryFrom<u64>>(&mut self) -> Option<Option<T>> {
        match self.uint()? {
            Some(n) => T::try_from(n).ok().map(Some),
            None => Some(None),
        }
    }

    fn bool(&mut self) -> Option<Option<bool>> {
        if self.null() {
            Some(None)
        } else if self.word("true") {
            Some(Some(true))
        } else if self.word("false") {
            Some(Some(false))
        } else {
            None
        }
    }

    /// An address in a string, as serde reads one (`FromStr`).
    fn ip(&mut self) -> Option<Option<IpAddr>> {
        match self.string()? {
            Some(text) => text.parse().ok().map(Some),
            None => Some(None),
        }
    }

    /// `{"key": value, ...}`, each field read by `field` (which reads its value).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.text.as_bytes().get(self.at) == Some(&b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.plain()?;
            self.eat(b':')?;
            field(self, key)?;
            self.ws();
            let next = *self.text.as_bytes().get(self.at)?;
            self.at += 1;
            match next {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn tunnel(&mut self) -> Option<Option<LineTunnel<'a>>> {
        if self.null() {
            return Some(None);
        }
        let mut t = LineTunnel::default();
        let mut seen = Fields::default();
        self.object(|s, key| {
            let bit = match key {
                "type" => 0,
                "vni" => 1,
                "src" => 2,
                "dst" => 3,
                _ => return None,
            };
            match bit {
                0 => set(&mut t.kind, s.string()?),
                1 => t.vni = s.uint_as()?,
                2 => set(&mut t.src, s.string()?),
                _ => set(&mut t.dst, s.string()?),
            }
            seen.first(bit)
        })?;
        Some(Some(t))
    }

    fn conntrack(&mut self) -> Option<Option<LineConntrack<'a>>> {
        if self.null() {
            return Some(None);
        }
        let mut c = LineConntrack::default();
        let mut seen = Fields::default();
        self.object(|s, key| {
            let bit = match key {
                "cause" => 0,
                "entries" => 1,
                "max" => 2,
                _ => return None,
            };
            match bit {
                0 => set(&mut c.cause, s.string()?),
                1 => c.entries = s.uint()?,
                _ => c.max = s.uint()?,
            }
            seen.first(bit)
        })?;
        Some(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde reads, for comparing: the fields the rules use, as text.
    fn fields(l: &Line<'_>) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            l.ts,
            l.kind,
            l.proto,
            l.src,
            l.dst,
            l.src_pod,
            l.netns,
            l.ifname,
            l.node,
            l.tcp_flags,
            l.tunnel.as_ref().map(|t| (&t.kind, t.vni, &t.src, &t.dst)),
            l.reason,
            l.len,
            l.conntrack.as_ref().map(|c| (&c.cause, c.entries, c.max)),
            l.state,
            l.orig_dst,
            l.reply_seen,
            l.conn,
            l.icmp_type,
            l.icmp_src,
            l.duration_ms,
            l.syns_sent,
        )
    }

    #[test]
    fn a_word_with_a_quote_backslash_or_control_character_is_flagged() {
        let word = |b: &[u8; 8]| u64::from_le_bytes(*b);
        assert!(!special(word(b"abcdefgh")) && !special(word(b"lab/clie")) && !special(word(b"\x7f~ \xff\x80!#$")));
        for at in 0..8 {
            for byte in [b'"', b'\\', 0, 0x1f, b'\n'] {
                let mut b = *b"abcdefgh";
                b[at] = byte;
                assert!(special(word(&b)), "{byte:#x} at {at}");
            }
        }
    }

    #[test]
    fn the_fast_path_reads_what_serde_reads_or_leaves_the_line_to_serde() {
        let taken = [
            r#"{"ts":"2026-11-22T02:30:01.000100000Z","kind":"drop","proto":"tcp","src":"10.1.0.5:41020","dst":"10.2.0.9:8080","src_pod":"lab/client","dst_pod":null,"netns":200,"node":"node-b","tcp_flags":"SYN","reason":"NETFILTER_DROP","reason_code":8,"location":"nf_hook_slow+0x9c","len":60}"#,
            r#" { "kind" : "drop" , "tunnel" : {"type":"vxlan","vni":1,"src":"10.78.0.1:4789","dst":"10.78.0.2:4789"}, "conntrack":{"cause":"table_full","entries":5,"max":null}, "len": 0 } "#,
            r#"{"kind":"connect_fail","proto":"tcp","src":"10.1.0.5:41020","dst":"10.96.0.1:443","state":"SYN_SENT","duration_ms":null,"syns_sent":0}"#,
            r#"{"kind":"nat","reply_seen":false,"assured":true,"conn":18446744073709551615,"orig_dst":"[fd00::1]:53","icmp_src":"fd00::2","duration_ms":null}"#,
            r#"{"kind":"mtu","icmp_type":255,"tunnel":null,"conntrack":null}"#,
            "{}",
        ];
        for text in taken {
            let fast = line(text).unwrap_or_else(|| panic!("not taken: {text}"));
            let serde: Line<'_> = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(fields(&fast), fields(&serde), "{text}");
        }
        let left = [
            // serde reads these (or refuses them): the fast path does not.
            r#"{"kind":"drop","src_pod":"a\"b"}"#,
            r#"{"kind":"drop","src_pod":"namespace/a-long-pod-name\u00e9"}"#,
            r#"{"kind":"drop","duration_ms":1.5}"#,
            r#"{"kind":"drop","unknown":1}"#,
            r#"{"kind":"drop","kind":"nat"}"#,
            r#"{"kind":"drop","len":1.0}"#,
            r#"{"kind":"drop","len":1e3}"#,
            r#"{"kind":"drop","len":01}"#,
            r#"{"kind":"drop","len":-1}"#,
            r#"{"kind":"drop","icmp_type":256}"#,
            r#"{"kind":"drop","len":"1"}"#,
            r#"{"kind":"drop","reply_seen":nullx}"#,
            r#"{"kind":"drop","icmp_src":"nope"}"#,
            r#"{"kind":"drop","tunnel":{"type":"vxlan","vni":1,"vni":2}}"#,
            r#"{"kind":"drop",}"#,
            r#"{"kind":"drop"} x"#,
            r#"{"kind":"drop""#,
            "{\"kind\":\"dr\top\"}",
            r#"{"kind":"fact","proto":17}"#,
        ];
        for text in left {
            assert!(line(text).is_none(), "taken: {text}");
        }
    }
}
