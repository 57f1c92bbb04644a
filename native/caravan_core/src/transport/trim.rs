//! Was a UDP answer trimmed without saying so? The pure decision behind
//! SRV discovery's transport choice (see [`crate::transport`]).
//!
//! Some servers drop records from a UDP answer without setting the TC bit.
//! Consul's DNS interface does so by default (`agent/dns.go`,
//! `trimUDPResponse`, `udp_answer_limit = 3`, `enable_truncate = false`):
//!
//! - a query without EDNS0 (or with a payload size of 512 or less) gets at
//!   most 3 SRV records;
//! - a query with EDNS0 gets as many records as fit the advertised payload
//!   size, and an OPT record back.
//!
//! Each SRV record travels with its *group*: its target's A/AAAA and TXT
//! records in the additional section. A trimmed answer is therefore within
//! one group of the payload size (the next group did not fit). An answer
//! that leaves room for its largest group was not trimmed by size; an answer
//! from a server that ignored EDNS0 and holds `UDP_ANSWER_LIMIT` or more SRV
//! records may have been cut by count. Either doubt is settled by asking
//! again over TCP, where every record comes back (up to 64 KB).

/// Consul's default `udp_answer_limit`: answers to queries without EDNS0
/// are cut to this many SRV records.
pub const UDP_ANSWER_LIMIT: usize = 3;

/// The payload size a UDP answer may use when the server shows no EDNS0
/// support (RFC 1035 2.3.4).
pub const CLASSIC_UDP_PAYLOAD: usize = 512;

/// What the UDP reply looked like, in the terms the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyShape {
    /// The TC (truncation) bit.
    pub truncated: bool,
    /// Whether the reply carried an OPT record (the server speaks EDNS0).
    pub has_opt: bool,
    /// The reply's size on the wire, in bytes.
    pub size: usize,
    /// How many SRV records the answer section holds.
    pub srv_answers: usize,
    /// The largest group (an SRV record plus the additional records of its
    /// target), each record counted uncompressed, in bytes: an upper bound
    /// on what one more group would have added.
    pub largest_group: usize,
}

/// Why a UDP answer is confirmed over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doubt {
    /// The server set TC (RFC 1035 4.1.1, RFC 7766 5).
    Truncated,
    /// The answer is within one group of the payload size: the next group
    /// may have been dropped to make it fit.
    NearPayload,
    /// No OPT record came back and the answer holds at least
    /// [`UDP_ANSWER_LIMIT`] SRV records: it may have been cut by count.
    AnswerLimit,
    /// The last complete answer to the same query at the same server did
    /// not fit a UDP reply ([`super::tcp_first`]): asked over TCP directly.
    Remembered,
}

impl Doubt {
    /// A short tag for logs and telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::NearPayload => "near_payload",
            Self::AnswerLimit => "answer_limit",
            Self::Remembered => "remembered",
        }
    }
}

/// Decides whether the UDP reply `shape` to a query that advertised
/// `payload` bytes (EDNS0, RFC 6891) may be incomplete. `None`: the answer
/// is complete and stays on UDP; `Some(doubt)`: ask again over TCP.
///
/// ```
/// use caravan_core::transport::trim::{may_be_trimmed, Doubt, ReplyShape};
/// let fits = ReplyShape { truncated: false, has_opt: true, size: 400, srv_answers: 8, largest_group: 90 };
/// assert_eq!(may_be_trimmed(&fits, 1232), None);
/// let full = ReplyShape { size: 1180, ..fits };
/// assert_eq!(may_be_trimmed(&full, 1232), Some(Doubt::NearPayload));
/// ```
pub fn may_be_trimmed(shape: &ReplyShape, payload: u16) -> Option<Doubt> {
    if shape.truncated {
        return Some(Doubt::Truncated);
    }
    if shape.srv_answers == 0 {
        // Nothing was kept, so nothing was dropped to make room: an empty
        // answer is NODATA, not a trimmed one.
        return None;
    }
    let limit = if shape.has_opt {
        usize::from(payload).max(CLASSIC_UDP_PAYLOAD)
    } else {
        if shape.srv_answers >= UDP_ANSWER_LIMIT {
            return Some(Doubt::AnswerLimit);
        }
        CLASSIC_UDP_PAYLOAD
    };
    if shape.size + shape.largest_group > limit {
        return Some(Doubt::NearPayload);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(size: usize, srv: usize, opt: bool) -> ReplyShape {
        ReplyShape {
            truncated: false,
            has_opt: opt,
            size,
            srv_answers: srv,
            largest_group: 100,
        }
    }

    #[test]
    fn tc_always_goes_to_tcp() {
        let tc = ReplyShape {
            truncated: true,
            ..shape(60, 0, true)
        };
        assert_eq!(may_be_trimmed(&tc, 1232), Some(Doubt::Truncated));
        let tc = ReplyShape {
            truncated: true,
            ..shape(60, 0, false)
        };
        assert_eq!(may_be_trimmed(&tc, 1232), Some(Doubt::Truncated));
    }

    #[test]
    fn answers_that_fit_stay_on_udp() {
        assert_eq!(may_be_trimmed(&shape(500, 8, true), 1232), None);
        // Exactly one group of room left: the next group would have fit.
        assert_eq!(may_be_trimmed(&shape(1132, 12, true), 1232), None);
        // Without EDNS0, fewer than Consul's 3 records and room left.
        assert_eq!(may_be_trimmed(&shape(200, 2, false), 1232), None);
    }

    #[test]
    fn answers_within_one_group_of_the_payload_are_confirmed() {
        assert_eq!(
            may_be_trimmed(&shape(1133, 12, true), 1232),
            Some(Doubt::NearPayload)
        );
        // Consul appends its OPT record after trimming: over the payload.
        assert_eq!(
            may_be_trimmed(&shape(1240, 14, true), 1232),
            Some(Doubt::NearPayload)
        );
        // Without OPT the server's limit is 512, whatever was advertised.
        assert_eq!(
            may_be_trimmed(&shape(450, 2, false), 1232),
            Some(Doubt::NearPayload)
        );
    }

    #[test]
    fn consuls_three_record_cut_is_confirmed() {
        assert_eq!(
            may_be_trimmed(&shape(300, 3, false), 1232),
            Some(Doubt::AnswerLimit)
        );
        assert_eq!(
            may_be_trimmed(&shape(300, 40, false), 1232),
            Some(Doubt::AnswerLimit)
        );
    }

    #[test]
    fn small_advertised_sizes_count_as_512() {
        assert_eq!(may_be_trimmed(&shape(300, 3, true), 100), None);
        assert_eq!(
            may_be_trimmed(&shape(420, 3, true), 100),
            Some(Doubt::NearPayload)
        );
    }

    #[test]
    fn empty_answers_are_not_trimmed() {
        assert_eq!(may_be_trimmed(&shape(1230, 0, true), 1232), None);
        assert_eq!(may_be_trimmed(&shape(40, 0, false), 1232), None);
    }
}
