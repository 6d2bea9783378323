//! W3C trace context (<https://www.w3.org/TR/trace-context/>) for tasks: pure values, no I/O.
//!
//! One trace per project: the client makes a random [`TraceId`] when it records a project,
//! and every task of the project is a span of that trace whose id is derived from the trace
//! id and the task's index ([`TraceParent::of_task`]). So a task published again (a lost task,
//! `resume`, `--retry-failed`) carries the same `traceparent`, and anyone holding the trace id
//! can compute a task's span id. `grep TRACE_ID` follows a project, `grep SPAN_ID` one task.

use std::fmt;

/// The AMQP header (and HTTP header) that carries a trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A trace id: 16 bytes, never all zero, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A span (parent) id: 8 bytes, never all zero, shown as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

/// A `traceparent` value: version 00, a trace id, the id of the span that sent the message,
/// and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The span that sent the message (the task, for a task message).
    pub parent_id: SpanId,
    /// The `sampled` flag (bit 0 of the trace flags).
    pub sampled: bool,
}

impl TraceId {
    /// The trace id made of `bytes`, unless they are all zero (invalid in W3C trace context).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<TraceId> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    /// Parses 32 lowercase hex digits (not all zero).
    pub fn from_hex(hex: &str) -> Option<TraceId> {
        let mut bytes = [0; 16];
        decode_hex(hex, &mut bytes)?;
        TraceId::from_bytes(bytes)
    }

    /// A trace id derived from a project id, for projects recorded before the client made
    /// one (they carry none in their record): stable, so every run of the client agrees.
    pub fn derived_from(project: &str) -> TraceId {
        let mut state = 0xcbf2_9ce4_8422_2325u64;
        for byte in project.bytes() {
            state = splitmix64(state ^ u64::from(byte));
        }
        let high = splitmix64(state);
        let low = splitmix64(high ^ 0x5452_4143_4549_4421);
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        TraceId::from_bytes(bytes).unwrap_or(TraceId([1; 16]))
    }

    /// The bytes.
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// The span id made of `bytes`, unless they are all zero.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<SpanId> {
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }

    /// Parses 16 lowercase hex digits (not all zero).
    pub fn from_hex(hex: &str) -> Option<SpanId> {
        let mut bytes = [0; 8];
        decode_hex(hex, &mut bytes)?;
        SpanId::from_bytes(bytes)
    }

    /// The span of task `index` in trace `trace`: distinct indexes get distinct spans (a
    /// bijection of the index, mixed with the trace id).
    pub fn of_task(trace: &TraceId, index: u32) -> SpanId {
        let seed = u64::from_be_bytes(trace.0[8..].try_into().expect("8 bytes"));
        let mixed = splitmix64(seed ^ splitmix64(u64::from(index)));
        SpanId::from_bytes(mixed.to_be_bytes()).unwrap_or(SpanId([0, 0, 0, 0, 0, 0, 0, 1]))
    }
}

impl TraceParent {
    /// The context a task message carries: task `index`'s span in `trace`, sampled.
    pub fn of_task(trace: &TraceId, index: u32) -> TraceParent {
        TraceParent {
            trace_id: *trace,
            parent_id: SpanId::of_task(trace, index),
            sampled: true,
        }
    }

    /// Parses a `traceparent` header value. Version 00 must be exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>`; a later version may append fields after the flags
    /// (kept unread, as the W3C text says); version ff, upper case and all-zero ids are
    /// invalid.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim();
        let mut parts = value.splitn(5, '-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let mut v = [0u8; 1];
        decode_hex(version, &mut v)?;
        if v[0] == 0xff || (v[0] == 0 && rest.is_some()) {
            return None;
        }
        // A later version's flags field is the first two characters of the fourth part.
        let flags = if v[0] == 0 { flags } else { flags.get(..2)? };
        let mut f = [0u8; 1];
        decode_hex(flags, &mut f)?;
        Some(TraceParent {
            trace_id: TraceId::from_hex(trace)?,
            parent_id: SpanId::from_hex(parent)?,
            sampled: f[0] & 1 == 1,
        })
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = u8::from(self.sampled);
        write!(f, "00-{}-{}-{flags:02x}", self.trace_id, self.parent_id)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// Fills `out` from exactly `2 * out.len()` lowercase hex digits.
fn decode_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    let digits = hex.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(())
}

/// A bijection of u64 that mixes its bits (the SplitMix64 finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_w3c_example_round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(text).unwrap();
        assert!(parsed.sampled);
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may add fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-next";
        assert!(!TraceParent::parse(future).unwrap().sampled);
    }

    #[test]
    fn task_spans_are_distinct_stable_and_parse_back() {
        let trace = TraceId::derived_from("nq16-d3-0000beef");
        assert_eq!(trace, TraceId::derived_from("nq16-d3-0000beef"));
        assert_ne!(trace, TraceId::derived_from("nq16-d3-0000beee"));
        let mut seen = std::collections::HashSet::new();
        for index in 0..10_000 {
            let tp = TraceParent::of_task(&trace, index);
            assert_eq!(tp, TraceParent::of_task(&trace, index));
            assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
            assert!(seen.insert(tp.parent_id), "span of task {index} repeats");
        }
        let other = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_ne!(SpanId::of_task(&other, 0), SpanId::of_task(&trace, 0));
    }
}
